"""The record models: what they accept, what they reject, and the docs rendered from them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError

from mentor.data.commands import JsonlSchemaName, SchemaName
from mentor.data.io import dump_record, format_validation_error
from mentor.data.schemas import (
    EXAMPLES,
    JSONL_SCHEMAS,
    SCHEMAS,
    ChatRecord,
    ClassificationRecord,
    CorpusRecord,
    QARecord,
    QrelRow,
    detect_schema,
    example_json,
    schema_docs,
)


def _error(model: type[BaseModel], data: Mapping[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return format_validation_error(info.value)


def test_chat_requires_user_and_assistant_and_known_roles() -> None:
    ok = ChatRecord.model_validate(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    )
    assert [m.role for m in ok.messages] == ["user", "assistant"]
    assert _error(ChatRecord, {"messages": [{"role": "user", "content": "hi"}]}) == (
        "field 'messages': needs at least one assistant message"
    )
    bad_role = {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}
    assert _error(ChatRecord, bad_role) == (
        "field 'messages.1.role': must be one of system, user, assistant, tool"
    )
    blank = {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "b"}]}
    assert _error(ChatRecord, blank) == "field 'messages.0.content': must not be empty"


def test_qa_fields_and_types() -> None:
    record = QARecord.model_validate({"question": "q?", "answer": "a", "doc_ids": ["d1", 2]})
    assert record.doc_ids == ["d1", "2"]
    assert record.context is None
    assert _error(QARecord, {"question": 5, "answer": "a"}) == (
        "field 'question': expected a string, got integer"
    )
    assert _error(QARecord, {"answer": "a"}) == "field 'question': missing"


def test_classification_label_int_becomes_str_and_bool_is_refused() -> None:
    assert ClassificationRecord.model_validate({"text": "t", "label": 3}).label == "3"
    assert "expected a string or integer, got boolean" in _error(
        ClassificationRecord, {"text": "t", "label": True}
    )
    assert "got number" in _error(ClassificationRecord, {"text": "t", "label": 1.5})


def test_extra_fields_are_kept_and_written_back() -> None:
    record = ClassificationRecord.model_validate({"text": "t", "label": "x", "source": "web"})
    assert dump_record(record) == {"text": "t", "label": "x", "source": "web"}


def test_corpus_uses_id_alias_and_drops_unset_optionals_on_dump() -> None:
    doc = CorpusRecord.model_validate({"_id": 7, "text": "body"})
    assert doc.id == "7"
    assert doc.title == ""
    assert dump_record(doc) == {"_id": "7", "title": "", "text": "body"}


def test_qrel_score_must_be_int() -> None:
    assert QrelRow.model_validate({"query_id": "q", "doc_id": "d", "score": "2"}).score == 2
    assert _error(QrelRow, {"query_id": "q", "doc_id": "d", "score": "x"}) == (
        "field 'score': expected an integer, got 'x'"
    )


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        ({"messages": []}, "chat"),
        ({"question": "q", "answer": "a"}, "qa"),
        ({"question": "q"}, "qa"),
        ({"text": "t", "label": "l"}, "classification"),
        ({"_id": "1", "title": "", "text": "t"}, "corpus"),
        ({"_id": "1", "text": "t"}, "query"),
        ({"something": 1}, None),
    ],
)
def test_detect_schema(obj: dict[str, object], kind: str | None) -> None:
    assert detect_schema(obj) == kind


def test_every_documented_example_validates_and_is_detected() -> None:
    for name in JSONL_SCHEMAS:
        obj = example_json(name)
        assert detect_schema(obj) == name
        SCHEMAS[name].model_validate(obj)
    assert set(EXAMPLES) == set(SCHEMAS)


def test_schema_docs_cover_every_field_with_a_description() -> None:
    docs = schema_docs()
    for name, model in SCHEMAS.items():
        assert f"## `{name}`" in docs
        for field_name, info in model.model_fields.items():
            assert info.description, f"{name}.{field_name} has no description"
            assert f"`{info.alias or field_name}`" in docs


def test_cli_schema_choices_match_the_registry() -> None:
    assert set(get_args(SchemaName)) == set(SCHEMAS)
    assert set(get_args(JsonlSchemaName)) == set(JSONL_SCHEMAS)
