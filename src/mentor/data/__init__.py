"""The dataset layer: documented record kinds, validating readers, dedup/leakage, stats, splits.

Typical use::

    from mentor.data import check_dataset, read_records, split_records

    report = check_dataset("train.jsonl", against="test.jsonl")
    for problem in report.problems:
        print(problem)                      # train.jsonl:7: field 'label': missing

The same operations are on the command line as ``mentor data check | split | convert | schemas``.
"""

from __future__ import annotations

from mentor.data.check import CheckReport, LabelConflict, check_dataset
from mentor.data.convert import ConvertResult, classification_to_chat, convert_file, qa_to_chat
from mentor.data.dedup import (
    DuplicateGroup,
    LeakPair,
    find_duplicates,
    find_duplicates_and_leakage,
    find_leakage,
    key_text,
    normalize_text,
)
from mentor.data.io import (
    LoadResult,
    Problem,
    Record,
    dump_record,
    read_csv_records,
    read_qrels,
    read_records,
    write_jsonl,
)
from mentor.data.schemas import (
    SCHEMAS,
    ChatMessage,
    ChatRecord,
    ClassificationRecord,
    CorpusRecord,
    QARecord,
    QrelRow,
    QueryRecord,
    detect_schema,
    get_schema,
    schema_docs,
)
from mentor.data.split import allocate, split_records, validate_ratios
from mentor.data.stats import (
    LabelBalance,
    LengthStats,
    approx_token_count,
    full_text,
    label_balance,
    length_stats,
)

__all__ = [
    "SCHEMAS",
    "ChatMessage",
    "ChatRecord",
    "CheckReport",
    "ClassificationRecord",
    "ConvertResult",
    "CorpusRecord",
    "DuplicateGroup",
    "LabelBalance",
    "LabelConflict",
    "LeakPair",
    "LengthStats",
    "LoadResult",
    "Problem",
    "QARecord",
    "QrelRow",
    "QueryRecord",
    "Record",
    "allocate",
    "approx_token_count",
    "check_dataset",
    "classification_to_chat",
    "convert_file",
    "detect_schema",
    "dump_record",
    "find_duplicates",
    "find_duplicates_and_leakage",
    "find_leakage",
    "full_text",
    "get_schema",
    "key_text",
    "label_balance",
    "length_stats",
    "normalize_text",
    "qa_to_chat",
    "read_csv_records",
    "read_qrels",
    "read_records",
    "schema_docs",
    "split_records",
    "validate_ratios",
    "write_jsonl",
]
