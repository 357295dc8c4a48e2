"""Incumbent arms without a model: the config (one kind each, errors naming the field), the
preflight checks, the token cost arithmetic against hand-computed numbers, and the verdict on
synthetic measurements (an incumbent tied with the best is kept unless a challenger is cheaper;
one sending passages off-site is excluded when the documents are secret)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.bakeoff.test_recommend import DOCS_AND_LABELS, PRIMARY, _arm

from mentor.bakeoff.config import BakeoffConfig, load_bakeoff_config
from mentor.bakeoff.incumbents import incumbent_built, preflight
from mentor.bakeoff.recommend import verdict
from mentor.bakeoff.results import ArmResult
from mentor.bakeoff.runner import arm_methods, price
from mentor.bakeoff.scoring import costs, token_usd_per_1k

HOSTED = {
    "endpoint": {
        "base_url": "https://api.example.com/v1",
        "model": "big-model",
        "api_key_env": "EXAMPLE_KEY",
        "input_usd_per_million": 0.15,
        "output_usd_per_million": 0.60,
    }
}


def _raw(tmp_path: Path, incumbents: dict[str, Any], arms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "data": {"test": str(tmp_path / "test.jsonl"), "docs": str(tmp_path / "docs")},
        "incumbents": incumbents,
        "arms": [{"name": "closed-book"}, *arms],
    }


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(ValueError) as caught:
        BakeoffConfig.model_validate(raw)
    return str(caught.value)


# --- config -------------------------------------------------------------------------------------


def test_an_incumbent_names_exactly_one_kind(tmp_path: Path) -> None:
    both = {"model": "smollm2-135m-instruct", "adapter": "x"}
    message = _error(_raw(tmp_path, {"old": both}, [{"name": "old", "model": "old"}]))
    assert "incumbents.old" in message and "exactly one of model, adapter, endpoint" in message
    message = _error(_raw(tmp_path, {"old": {}}, [{"name": "old", "model": "old"}]))
    assert "got none" in message


@pytest.mark.parametrize(
    ("endpoint", "field", "words"),
    [
        ({"base_url": "api.example.com", "model": "m"}, "endpoint.base_url", "http:// or https://"),
        ({"base_url": "ftp://x/v1", "model": "m"}, "endpoint.base_url", "http:// or https://"),
        ({"base_url": "http://x/v1", "model": ""}, "endpoint.model", "at least 1"),
        (
            {"base_url": "http://x/v1", "model": "m", "input_usd_per_million": -1},
            "endpoint.input_usd_per_million",
            "greater than or equal to 0",
        ),
        ({"base_url": "http://x/v1", "model": "m", "price": 1}, "endpoint.price", "not permitted"),
    ],
)
def test_endpoint_errors_name_the_field(
    tmp_path: Path, endpoint: dict[str, Any], field: str, words: str
) -> None:
    path = tmp_path / "bakeoff.yaml"
    import yaml

    raw = _raw(tmp_path, {"hosted": {"endpoint": endpoint}}, [{"name": "h", "model": "hosted"}])
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError) as caught:
        load_bakeoff_config(path)
    assert f"incumbents.hosted.{field}" in str(caught.value) and words in str(caught.value)


def test_arms_may_name_incumbents_but_not_quantize_an_endpoint(tmp_path: Path) -> None:
    ok = BakeoffConfig.model_validate(
        _raw(tmp_path, {"hosted": HOSTED}, [{"name": "h+rag", "model": "hosted", "retrieval": {}}])
    )
    assert ok.incumbent(ok.arms[1]) is not None and ok.incumbent(ok.arms[0]) is None
    assert arm_methods(ok.arms[1], ok) == ["hosted", "rag"]
    message = _error(
        _raw(tmp_path, {"hosted": HOSTED}, [{"name": "h", "model": "hosted", "quantize": "int4"}])
    )
    assert "arms.h.quantize" in message and "endpoint" in message
    message = _error(_raw(tmp_path, {"hosted": HOSTED}, [{"name": "x", "model": "nope"}]))
    assert "arms.x.model: 'nope' is not one of base, hosted" in message
    message = _error(_raw(tmp_path, {"base": HOSTED}, []))
    assert "incumbents.base: the name is taken" in message
    bad_hub = _error(_raw(tmp_path, {"m": {"model": "hf:only-org"}}, []))
    assert "incumbents.m" in bad_hub and "hf:ORG/NAME" in bad_hub


def test_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "adapters" / "v3").mkdir(parents=True)
    (tmp_path / "models" / "old").mkdir(parents=True)
    raw = _raw(
        tmp_path,
        {
            "ft": {"adapter": "adapters/v3"},
            "old": {"model": "models/old"},
            "hub": {"model": "hf:org/name"},
        },
        [{"name": "ft", "model": "ft"}],
    )
    (tmp_path / "bakeoff.yaml").write_text(yaml.safe_dump(raw))
    config = load_bakeoff_config(tmp_path / "bakeoff.yaml")
    assert config.incumbents["ft"].adapter == tmp_path / "adapters" / "v3"
    assert config.incumbents["old"].model == str(tmp_path / "models" / "old")
    assert config.incumbents["hub"].model == "hf:org/name"
    assert config.incumbents["ft"].kind == "adapter" and config.incumbents["hub"].kind == "model"


def test_preflight_names_the_missing_key_the_adapter_and_the_model(tmp_path: Path) -> None:
    config = BakeoffConfig.model_validate(
        _raw(tmp_path, {"hosted": HOSTED}, [{"name": "h", "model": "hosted"}])
    )
    with pytest.raises(
        ValueError, match=r"incumbents\.hosted\.endpoint\.api_key_env: .*EXAMPLE_KEY"
    ):
        preflight(config, environ={})
    preflight(config, environ={"EXAMPLE_KEY": "sk-test"})
    local = {"endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": ""}}
    preflight(
        BakeoffConfig.model_validate(_raw(tmp_path, {"l": local}, [{"name": "l", "model": "l"}])),
        environ={},
    )  # a server on this machine needs no key

    (tmp_path / "empty").mkdir()
    adapter = _raw(
        tmp_path, {"ft": {"adapter": str(tmp_path / "empty")}}, [{"name": "ft", "model": "ft"}]
    )
    with pytest.raises(ValueError, match=r"incumbents\.ft\.adapter: .*adapter_config\.json"):
        preflight(BakeoffConfig.model_validate(adapter), environ={})
    model = _raw(tmp_path, {"m": {"model": str(tmp_path / "empty")}}, [{"name": "m", "model": "m"}])
    with pytest.raises(ValueError, match=r"incumbents\.m\.model: .*not a model folder"):
        preflight(BakeoffConfig.model_validate(model), environ={})
    unused = _raw(tmp_path, {"m": {"model": str(tmp_path / "empty")}}, [])
    preflight(BakeoffConfig.model_validate(unused), environ={})  # no arm uses it: not checked


def test_a_model_incumbent_is_built_in_no_time_and_its_fingerprint_follows_its_files(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    config = BakeoffConfig.model_validate(
        _raw(tmp_path, {"old": {"model": str(folder)}}, [{"name": "old", "model": "old"}])
    )
    built = incumbent_built(config.incumbents["old"], config)
    assert built.seconds == 0.0 and built.kind == "incumbent-model" and built.base == str(folder)
    (folder / "config.json").write_text('{"changed": true}')
    assert incumbent_built(config.incumbents["old"], config).fingerprint != built.fingerprint


# --- costs --------------------------------------------------------------------------------------


def test_token_cost_against_hand_computed_numbers() -> None:
    # 100 prompt tokens at $0.15/M + 20 completion tokens at $0.60/M = $27e-6 a query
    assert token_usd_per_1k(100, 20, 0.15, 0.60) == pytest.approx(0.027)
    assert token_usd_per_1k(1000, 0, 2.5, 10.0) == pytest.approx(2.5)
    assert token_usd_per_1k(0, 1000, 2.5, 10.0) == pytest.approx(10.0)
    priced = costs(
        build_s=3600,
        mean_answer_s=9.0,  # ignored: the endpoint bills tokens, not time
        train_usd_per_hour=1.0,
        serve_usd_per_hour=100.0,
        concurrency=1,
        updates_per_year=12,
        queries_per_day=1000,
        token_usd_per_1k=0.027,
    )
    assert priced.serve_usd_per_1k == pytest.approx(0.027) and priced.serve_basis == "tokens"
    assert priced.yearly_usd == pytest.approx(12 * 1.0 + 0.027 * 365)


# --- the verdict --------------------------------------------------------------------------------

SPECS = {
    "closed-book": {"name": "closed-book"},
    "rag": {"name": "rag", "retrieval": {"k": 3}},
    "lora": {"name": "lora", "model": "lora"},
    "current-ft": {"name": "current-ft", "model": "current-ft"},
    "hosted+rag": {"name": "hosted+rag", "model": "hosted", "retrieval": {}},
}


def _incumbent(arm: ArmResult, kind: str, usage: dict[str, float] | None = None) -> ArmResult:
    arm.incumbent = kind
    arm.offsite = kind == "endpoint"
    arm.usage = usage or {}
    return arm


def _verdict(tmp_path: Path, arms: list[ArmResult], **situation: Any) -> Any:
    config = BakeoffConfig.model_validate(
        {
            "data": {
                "test": str(tmp_path / "t.jsonl"),
                "docs": str(tmp_path / "d"),
                "train": str(tmp_path / "tr.jsonl"),
            },
            "primary": PRIMARY,
            "training": {"lora": {"method": "lora"}},
            "incumbents": {"current-ft": {"adapter": str(tmp_path / "a")}, "hosted": HOSTED},
            "arms": [SPECS[a.name] for a in arms],
            "situation": {"hardware": "cpu_server", "freshness": "static", **situation},
        }
    )
    price(arms, config)
    return verdict(arms, arms[0], config, DOCS_AND_LABELS)


def test_an_incumbent_tied_with_the_best_is_kept(tmp_path: Path) -> None:
    arms = [
        _arm("closed-book", "base", ["prompting"], 10),
        _arm("lora", "lora", ["lora"], 30, training_s=3600),
        _incumbent(_arm("current-ft", "current-ft", ["incumbent"], 29), "adapter"),
    ]
    v = _verdict(tmp_path, arms)
    assert v.arm == "current-ft"
    assert v.paragraph.startswith("Keep current-ft")
    assert "what you run today" in v.paragraph and "switching would buy neither" in v.paragraph


def test_a_cheaper_tied_challenger_replaces_the_incumbent_and_says_so(tmp_path: Path) -> None:
    # the hosted arm bills 2000 prompt + 50 completion tokens at $2.5/$10 per M: $5.5 per 1k
    usage = {"prompt_tokens": 2000.0, "completion_tokens": 50.0,
             "input_usd_per_million": 2.5, "output_usd_per_million": 10.0}  # fmt: skip
    arms = [
        _arm("closed-book", "base", ["prompting"], 10),
        _arm("rag", "base", ["rag"], 30, index_s=60),
        _incumbent(_arm("hosted+rag", "hosted", ["hosted", "rag"], 31), "endpoint", usage),
    ]
    v = _verdict(tmp_path, arms)
    hosted = arms[2]
    assert hosted.costs is not None and hosted.costs.serve_basis == "tokens"
    assert hosted.costs.serve_usd_per_1k == pytest.approx(5.5)
    assert v.arm == "rag"
    assert "Against hosted+rag, what you run today (endpoint), rag scores" in v.paragraph
    assert "ties with it and costs less a year" in v.paragraph


def test_a_measurably_better_incumbent_is_kept_whatever_it_costs(tmp_path: Path) -> None:
    usage = {"prompt_tokens": 2000.0, "completion_tokens": 50.0,
             "input_usd_per_million": 2.5, "output_usd_per_million": 10.0}  # fmt: skip
    arms = [
        _arm("closed-book", "base", ["prompting"], 10),
        _arm("rag", "base", ["rag"], 20, index_s=60),
        _incumbent(_arm("hosted+rag", "hosted", ["hosted", "rag"], 38), "endpoint", usage),
    ]
    v = _verdict(tmp_path, arms)
    assert v.arm == "hosted+rag" and "scores measurably above every other" in v.paragraph
    assert "Its rule for what runs today is to keep it until a change measurably beats it" in (
        v.paragraph
    )
    keep = [r for r in v.reasons if "(incumbent=" in r]
    assert keep and keep[0].startswith("framework: You run hosted")
    secret = _verdict(tmp_path, arms, secret_documents=True)
    assert secret.arm == "rag"
    assert "endpoint off this machine" in secret.excluded["hosted+rag"]


def test_the_example_loads_with_each_profile() -> None:
    example = Path(__file__).parents[2] / "examples" / "bakeoff" / "incumbents.yaml"
    local = load_bakeoff_config(example, profile="local")
    assert [a.name for a in local.arms][2:] == ["served", "served+rag", "coder-local+rag"]
    served = local.incumbents["served"].endpoint
    assert served is not None and served.input_usd_per_million == 0.0
    hosted = load_bakeoff_config(example, profile="hosted").incumbents["hosted"].endpoint
    assert hosted is not None and hosted.output_usd_per_million == 0.60
    assert local.incumbents["current-ft"].adapter == example.parent / "adapters" / "support-v3"
