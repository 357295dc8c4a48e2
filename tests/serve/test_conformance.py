"""OpenAI API conformance through the official client: logprobs, n, bare adapter names, vLLM's
adapter routes. Log-probabilities are checked against a forward pass of the same tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
import torch
from tests.serve.conftest import ADMIN, KEY, make_adapter, scripted

from mentor.models.engine import HFEngine, Request
from mentor.models.protocols import SamplingConfig
from mentor.serve.engine import Engine
from mentor.testing.tiny_models import tiny_llama

MESSAGES = [{"role": "user", "content": "What is the refund window?"}]


def raw_logprobs(model: torch.nn.Module, prompt: list[int], reply: list[int]) -> torch.Tensor:
    """log-softmax of the model's logits at each reply position (T, V), teacher-forced."""
    ids = torch.tensor([prompt + reply])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    return torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)


# ---- logprobs ------------------------------------------------------------------------------------


def test_chat_logprobs_scripted_streamed_and_not(start) -> None:
    client = start(scripted("one two three", "one two three")).client()
    reply = client.chat.completions.create(
        model="tiny", messages=MESSAGES, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    assert [t.logprob for t in content] == [-0.5, -1.0, -1.5]
    assert [len(t.top_logprobs) for t in content] == [2, 2, 2]
    assert content[1].top_logprobs[1].token == "alt0"
    assert content[1].bytes == list(b" two")
    assert reply.usage.completion_tokens == len(content)
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, logprobs=True, top_logprobs=2, stream=True
        )
    )
    streamed = [t for c in chunks for t in (c.choices[0].logprobs.content or [])]
    assert [t.model_dump() for t in streamed] == [t.model_dump() for t in content]


def test_no_logprobs_unless_asked(start) -> None:
    client = start(scripted("a b")).client()
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES)
    assert reply.choices[0].logprobs is None


def test_completion_logprobs_are_the_model_s_own(start) -> None:
    """Sampled hot, with penalties: the reported numbers are still log-softmax of the raw logits
    (OpenAI's and vLLM's default), checked against a teacher-forced pass."""
    model, tokenizer = tiny_llama()
    client = start(Engine.local(model, tokenizer, "tiny")).client()
    prompt = tokenizer("The refund")["input_ids"]
    asked = {"model": "tiny", "prompt": "The refund", "max_tokens": 8, "seed": 3, "logprobs": 3}
    sampled = {"temperature": 1.7, "frequency_penalty": 1.5, "presence_penalty": 0.5}
    reply = client.completions.create(**asked, **sampled)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == reply.usage.completion_tokens == 8
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert logprobs.text_offset == [sum(map(len, logprobs.tokens[:i])) for i in range(8)]
    # the same request straight to an engine over the same model: the server adds nothing
    direct = HFEngine(model, tokenizer, name="direct")
    sampling = SamplingConfig(max_new_tokens=8, seed=3, logprobs=3, temperature=1.7,
                              frequency_penalty=1.5, presence_penalty=0.5)  # fmt: skip
    [expected] = direct.generate([Request(prompt, sampling)])
    assert logprobs.tokens == [t.chosen.text for t in expected.logprobs]
    assert logprobs.token_logprobs == pytest.approx([t.chosen.logprob for t in expected.logprobs])
    reference = raw_logprobs(model, prompt, [t.chosen.token_id for t in expected.logprobs])
    for i, top in enumerate(logprobs.top_logprobs):
        assert 1 <= len(top) <= 3  # fewer where two alternatives decode to the same text
        assert max(top.values()) == pytest.approx(float(reference[i].max()), abs=1e-4)
    streamed = client.completions.create(**asked, **sampled, stream=True)
    pieces = [c.choices[0].logprobs for c in streamed if c.choices[0].logprobs]
    assert [x for p in pieces for x in p.token_logprobs] == logprobs.token_logprobs
    assert [x for p in pieces for x in p.text_offset] == logprobs.text_offset


def test_logprob_field_rules(start) -> None:
    client = start(scripted("a")).client()
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, top_logprobs=2)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, logprobs=True, top_logprobs=21
        )
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model="tiny", prompt="x", logprobs=1, echo=True)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.completions.create(model="tiny", prompt="x", logprobs=True)  # type: ignore[arg-type]


# ---- n choices ---------------------------------------------------------------------------------


def test_n_choices_are_independent_and_seeded(start) -> None:
    client = start().client()

    def ask(**extra: object) -> list[str]:
        reply = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=8, temperature=1.0, seed=11, n=3, **extra
        )
        assert [c.index for c in reply.choices] == [0, 1, 2]
        assert reply.usage.completion_tokens == 24
        return [c.message.content or "" for c in reply.choices]

    first = ask()
    assert len(set(first)) == 3  # each choice its own seed
    assert ask() == first  # and the seeds repeat
    stream = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=1.0, seed=11, n=3, stream=True
    )
    texts = ["", "", ""]
    finished = set()
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert texts == first and finished == {0, 1, 2}
    one = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=1.0, seed=11
    )
    assert one.choices[0].message.content == first[0]  # choice 0 is the plain request


def test_n_completions_with_logprobs(start) -> None:
    client = start(scripted("x y", "x y")).client()
    reply = client.completions.create(model="tiny", prompt="p", n=2, logprobs=1)
    assert [c.logprobs.token_logprobs for c in reply.choices] == [[-0.5, -1.0]] * 2


# ---- adapters as vLLM's clients address and load them -------------------------------------------


def test_bare_adapter_names_and_vllm_routes(start, tmp_path: Path) -> None:
    running = start(keys=(KEY, ADMIN), admin_keys=(ADMIN,), adapter_roots=(tmp_path,))
    make_adapter(tmp_path / "legal", 1)
    http = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {ADMIN}"})
    body = {"lora_name": "legal", "lora_path": str(tmp_path / "legal")}
    user = httpx.post(
        f"{running.url}/v1/load_lora_adapter", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert user.status_code == 403  # same rules as /v1/adapters: admins only
    loaded = http.post("/v1/load_lora_adapter", json=body)
    assert loaded.status_code == 200 and "legal" in loaded.text
    client = running.client()

    def ask(model: str) -> str | None:
        reply = client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=8, temperature=0
        )
        return reply.choices[0].message.content

    assert ask("legal") == ask("tiny:legal") != ask("tiny")
    again = http.post("/v1/load_lora_adapter", json=body)
    assert again.status_code == 400 and again.json()["error"]["param"] == "lora_path"
    assert http.post("/v1/load_lora_adapter", json={**body, "load_inplace": True}).is_success
    outside = http.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/etc"})
    assert outside.status_code == 400 and outside.json()["error"]["param"] == "lora_path"
    assert http.post("/v1/unload_lora_adapter", json={"lora_name": "legal"}).status_code == 200
    with pytest.raises(openai.NotFoundError):
        ask("legal")
    gone = http.post("/v1/unload_lora_adapter", json={"lora_name": "legal"})
    assert gone.status_code == 404


# ---- embeddings: token-id inputs, usage in tokens ------------------------------------------------


def test_embeddings_take_token_ids_and_count_tokens(start, tmp_path: Path) -> None:
    from mentor.models.embedding import SentenceEmbedder
    from mentor.testing.tiny_models import tiny_sentence_transformer_folder

    folder = tiny_sentence_transformer_folder(tmp_path / "embedder")
    embedder = SentenceEmbedder(folder, name="tiny-embed")
    client = start(scripted("a"), embedder=embedder).client()
    texts = ["refund window", "the shipping policy for parcels"]
    ids = [embedder.model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    by_text = client.embeddings.create(model="tiny-embed", input=texts)
    by_ids = client.embeddings.create(model="tiny-embed", input=ids)
    one = client.embeddings.create(model="tiny-embed", input=ids[1])
    for a, b in zip(by_text.data, by_ids.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-5)
    assert one.data[0].embedding == pytest.approx(by_text.data[1].embedding, abs=1e-5)
    counted = sum(len(i) for i in ids)
    assert by_text.usage.prompt_tokens == by_ids.usage.prompt_tokens == counted
    assert counted != sum(len(t.split()) for t in texts)  # tokens, not words
    with pytest.raises(openai.BadRequestError, match=r"input\.0.*vocabulary"):
        client.embeddings.create(model="tiny-embed", input=[[10**9]])
    with pytest.raises(openai.BadRequestError, match=r"input\.1"):
        client.embeddings.create(model="tiny-embed", input=[[5], []])


def test_token_ids_need_an_embedder_with_a_tokenizer(start) -> None:
    from mentor.testing import HashEmbedder

    client = start(scripted("a"), embedder=HashEmbedder(16)).client()
    with pytest.raises(openai.BadRequestError, match=r"input\.0.*text only"):
        client.embeddings.create(model="hash", input=[1, 2, 3])
    words = client.embeddings.create(model="hash", input="three little words!")
    assert words.usage.prompt_tokens == 3


# ---- response_format: constrained decoding ------------------------------------------------------

ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "ok": {"type": "boolean"}},
    "required": ["answer", "ok"],
}


def test_response_format_json_schema_streamed_and_not(start) -> None:
    client = start().client()
    asked = {
        "model": "tiny",
        "messages": MESSAGES,
        "max_tokens": 80,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": ANSWER, "strict": True},
        },
    }
    reply = client.chat.completions.create(**asked)
    value = json.loads(reply.choices[0].message.content or "")
    assert value["answer"] in ("yes", "no") and isinstance(value["ok"], bool)
    assert reply.choices[0].finish_reason == "stop"
    chunks = client.chat.completions.create(**asked, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content
    free = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20)
    assert not (free.choices[0].message.content or "").lstrip().startswith("{")
    loose = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=10, response_format={"type": "json_object"}
    )
    assert (loose.choices[0].message.content or "").lstrip().startswith("{")


def test_response_format_problems_are_named(start) -> None:
    client = start().client()
    bad = [
        ({"type": "json_schema"}, "response_format"),
        ({"type": "yaml"}, "response_format.type"),
        ({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "objekt"}}},
         "response_format.json_schema.schema"),
        ({"type": "json_object", "json_schema": {"name": "a"}}, "response_format.json_schema"),
    ]  # fmt: skip
    for value, named in bad:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="tiny", messages=MESSAGES, response_format=value)
        assert caught.value.body["param"] == named, caught.value.body
    scripted_client = start(scripted("a")).client()  # an engine that cannot constrain says so
    with pytest.raises(openai.BadRequestError, match="response_format"):
        scripted_client.chat.completions.create(
            model="tiny", messages=MESSAGES, response_format={"type": "json_object"}
        )


def test_the_readme_table_is_the_server_s() -> None:
    from mentor.serve.schemas import OPENAI_FIELDS

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for api, table in OPENAI_FIELDS.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| {api} |"))
        _, honoured, refused = (cell.split() for cell in row.strip("|").split("|"))
        assert set(honoured) == {f for f, how in table.items() if how == "honoured"}, api
        assert set(refused) == {f for f, how in table.items() if how == "refused"}, api


# ---- lm-evaluation-harness's local-completions requests ----------------------------------------


def test_lm_eval_loglikelihood_request_shape(start) -> None:
    """lm-eval sends token-id prompts in a batch with echo, logprobs 1 and max_tokens 1, and reads
    token_logprobs[ctxlen:-1] and top_logprobs for its greedy check."""
    model, tokenizer = tiny_llama()
    client = start(Engine.local(model, tokenizer, "tiny")).client()
    prompts = [tokenizer("The refund window is")["input_ids"], tokenizer("Ship it")["input_ids"]]
    reply = client.completions.create(
        model="tiny", prompt=prompts, temperature=0, max_tokens=1, logprobs=1, seed=1234, echo=True
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage.prompt_tokens == sum(map(len, prompts))
    for choice, ids in zip(reply.choices, prompts, strict=True):
        logprobs = choice.logprobs
        assert len(logprobs.tokens) == len(ids) + 1  # the prompt, then the one new token
        assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
        assert choice.text.startswith(tokenizer.decode(ids))
        reference = raw_logprobs(model, ids[:1], ids[1:])  # the prompt scored teacher-forced
        for i, token in enumerate(ids[1:], start=1):
            assert logprobs.token_logprobs[i] == pytest.approx(
                float(reference[i - 1, token]), abs=1e-4
            )
            greedy = max(logprobs.top_logprobs[i].values())
            assert greedy == pytest.approx(float(reference[i - 1].max()), abs=1e-4)
        assert logprobs.text_offset[0] == 0
    scored_only = client.completions.create(
        model="tiny", prompt=prompts[0], max_tokens=0, logprobs=0, echo=True
    )
    assert len(scored_only.choices[0].logprobs.tokens) == len(prompts[0])
    assert scored_only.usage.completion_tokens == 0
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model="tiny", prompt="x", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match=r"prompt\.1.*vocabulary"):
        client.completions.create(model="tiny", prompt=[[1], [10**9]], max_tokens=1)


# ---- logit_bias ----------------------------------------------------------------------------------


def test_logit_bias_through_the_client(start) -> None:
    """+100 forces a token and -100 bans the greedy one, streamed and not, chat and completions;
    the logprobs reported stay the model's own (before the bias)."""
    model, tokenizer = tiny_llama()
    client = start(Engine.local(model, tokenizer, "tiny")).client()
    asked = {"model": "tiny", "messages": MESSAGES, "max_tokens": 5, "temperature": 0,
             "logprobs": True, "top_logprobs": 1}  # fmt: skip
    free = client.chat.completions.create(**asked).choices[0].logprobs.content
    greedy = free[0].token
    special = set(tokenizer.all_special_ids)
    forced_id = next(
        i for i in range(5, 300)
        if i not in special and (t := tokenizer.decode([i])).strip() and "\ufffd" not in t
        and t not in {x.token for x in free}
    )  # fmt: skip
    forced_text = tokenizer.decode([forced_id])
    forced = client.chat.completions.create(**asked, logit_bias={str(forced_id): 100})
    content = forced.choices[0].logprobs.content
    assert [t.token for t in content] == [forced_text] * 5
    assert content[0].top_logprobs[0].token == greedy  # raw: the bias is not in the numbers
    chunks = client.chat.completions.create(**asked, logit_bias={str(forced_id): 100}, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == forced_text * 5
    prompt = tokenizer("The refund")["input_ids"]
    with torch.no_grad():
        first = int(model(input_ids=torch.tensor([prompt])).logits[0, -1].argmax())
    completion = {"model": "tiny", "prompt": prompt, "max_tokens": 3, "temperature": 0,
                  "logprobs": 1}  # fmt: skip
    plain = client.completions.create(**completion).choices[0].logprobs
    banned = client.completions.create(**completion, logit_bias={str(first): -100})
    assert plain.tokens[0] == tokenizer.decode([first]) != banned.choices[0].logprobs.tokens[0]
    assert banned.choices[0].logprobs.top_logprobs[0] == plain.top_logprobs[0]


def test_logit_bias_problems_are_named(start) -> None:
    from tests.serve.test_hardening import assert_error, post

    model, tokenizer = tiny_llama()
    url = start(Engine.local(model, tokenizer, "tiny")).url
    base = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2}
    vocab = len(tokenizer)
    for bias, named in (
        ({"abc": 1}, "logit_bias.abc"),
        ({"-1": 1}, "logit_bias.-1"),
        ({"1.5": 1}, "logit_bias.1.5"),
        ({str(vocab): 1}, f"logit_bias.{vocab}"),
        ({"5": 100.5}, "logit_bias.5"),
        ({"5": -101}, "logit_bias.5"),
        ({"5": "x"}, "logit_bias.5"),
        ({str(i): 1 for i in range(301)}, "logit_bias"),
    ):
        for route, body in (
            ("/v1/chat/completions", base),
            ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2}),
        ):
            assert_error(post(url, route, {**body, "logit_bias": bias}), 400, named)  # fmt: skip
    for fine in ({"5": -100, str(vocab - 1): 100}, {str(i): 1 for i in range(300)}):
        reply = post(url, "/v1/chat/completions", {**base, "logit_bias": fine})
        assert reply.status_code == 200, reply.text
    scripted_url = start(scripted("a b")).url
    assert_error(post(scripted_url, "/v1/chat/completions", {**base, "logit_bias": {"5": 1}}), 400,
                 "logit_bias")  # fmt: skip
