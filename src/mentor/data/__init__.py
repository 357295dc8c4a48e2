"""The dataset layer: documented record kinds, validating readers, dedup/leakage, stats, splits.

Typical use::

    from mentor.data import check_dataset, read_records, split_records

    report = check_dataset("train.jsonl", against="test.jsonl")
    for problem in report.problems:
        print(problem)                      # train.jsonl:7: field 'label': missing

The same operations are on the command line as ``mentor data check | split | convert | schemas``.
Readers take JSONL, CSV, Parquet, Arrow, folders and ``hf:ORG/NAME[:split]``; ShareGPT, Alpaca
and TRL prompt/completion records are converted on the way in (:mod:`mentor.data.formats`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mentor.utils.lazy import lazy_exports

if TYPE_CHECKING:
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
    from mentor.data.formats import FORMATS, Detection, Format, detect_format, file_format
    from mentor.data.io import (
        LoadResult,
        Problem,
        Record,
        dump_record,
        parse_hub_id,
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
        TextRecord,
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
    "FORMATS",
    "SCHEMAS",
    "ChatMessage",
    "ChatRecord",
    "CheckReport",
    "ClassificationRecord",
    "ConvertResult",
    "CorpusRecord",
    "Detection",
    "DuplicateGroup",
    "Format",
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
    "TextRecord",
    "allocate",
    "approx_token_count",
    "check_dataset",
    "classification_to_chat",
    "convert_file",
    "detect_format",
    "detect_schema",
    "dump_record",
    "file_format",
    "find_duplicates",
    "find_duplicates_and_leakage",
    "find_leakage",
    "full_text",
    "get_schema",
    "key_text",
    "label_balance",
    "length_stats",
    "normalize_text",
    "parse_hub_id",
    "qa_to_chat",
    "read_csv_records",
    "read_qrels",
    "read_records",
    "schema_docs",
    "split_records",
    "validate_ratios",
    "write_jsonl",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "CheckReport": "mentor.data.check",
        "LabelConflict": "mentor.data.check",
        "check_dataset": "mentor.data.check",
        "ConvertResult": "mentor.data.convert",
        "classification_to_chat": "mentor.data.convert",
        "convert_file": "mentor.data.convert",
        "qa_to_chat": "mentor.data.convert",
        "DuplicateGroup": "mentor.data.dedup",
        "LeakPair": "mentor.data.dedup",
        "find_duplicates": "mentor.data.dedup",
        "find_duplicates_and_leakage": "mentor.data.dedup",
        "find_leakage": "mentor.data.dedup",
        "key_text": "mentor.data.dedup",
        "normalize_text": "mentor.data.dedup",
        "FORMATS": "mentor.data.formats",
        "Detection": "mentor.data.formats",
        "Format": "mentor.data.formats",
        "detect_format": "mentor.data.formats",
        "file_format": "mentor.data.formats",
        "LoadResult": "mentor.data.io",
        "Problem": "mentor.data.io",
        "Record": "mentor.data.io",
        "dump_record": "mentor.data.io",
        "parse_hub_id": "mentor.data.io",
        "read_csv_records": "mentor.data.io",
        "read_qrels": "mentor.data.io",
        "read_records": "mentor.data.io",
        "write_jsonl": "mentor.data.io",
        "ChatMessage": "mentor.data.schemas",
        "ChatRecord": "mentor.data.schemas",
        "ClassificationRecord": "mentor.data.schemas",
        "CorpusRecord": "mentor.data.schemas",
        "QARecord": "mentor.data.schemas",
        "QrelRow": "mentor.data.schemas",
        "QueryRecord": "mentor.data.schemas",
        "TextRecord": "mentor.data.schemas",
        "SCHEMAS": "mentor.data.schemas",
        "detect_schema": "mentor.data.schemas",
        "get_schema": "mentor.data.schemas",
        "schema_docs": "mentor.data.schemas",
        "allocate": "mentor.data.split",
        "split_records": "mentor.data.split",
        "validate_ratios": "mentor.data.split",
        "LabelBalance": "mentor.data.stats",
        "LengthStats": "mentor.data.stats",
        "approx_token_count": "mentor.data.stats",
        "full_text": "mentor.data.stats",
        "label_balance": "mentor.data.stats",
        "length_stats": "mentor.data.stats",
    },
)
