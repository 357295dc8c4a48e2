"""Diagnose a bad answer: run the RAG pipeline stage by stage and name the first that broke.

Verdicts, in pipeline order, each with the evidence behind it:

- ``nothing-retrieved``: no hit at all (empty index, filters that match nothing, or, in BM25
  mode, no word of the question in the index).
- ``low-scores``: the top hit's confidence is below the threshold, or below the median score
  of off-domain questions when the index was calibrated: the documents likely lack the topic.
- ``answer-not-in-sources``: with a reference answer, under half of its content words appear in
  the retrieved text; without one, the generated answer is poorly supported (or a refusal) and
  under half of the question's content words appear in the retrieved text.
- ``generator-ignored-context``: the sources hold the answer, but the reply refuses, is under
  half supported by them, states numbers they lack, or has token F1 below 0.3 with the
  reference.
- ``ok``: every stage did its job.

Support and coverage are the lexical measures of :mod:`mentor.evaluate.grounding`.

Run: ``mentor rag diagnose "how do I export a board?" --index idx [--reference "..."]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from mentor.evaluate.grounding import (
    answer_in_sources,
    invented_numbers,
    support,
    unsupported_tokens,
)
from mentor.evaluate.text import token_f1
from mentor.models.protocols import Generator, SamplingConfig
from mentor.rag.answer import confidence, generate_answer, is_refusal
from mentor.rag.calibrate import Calibration
from mentor.rag.index import embed_input
from mentor.rag.records import Hit
from mentor.rag.retrieve import Reranker, SearchConfig, Searcher

Verdict = Literal[
    "nothing-retrieved", "low-scores", "answer-not-in-sources", "generator-ignored-context", "ok"
]
SOURCES_HOLD = 0.5
"""Share of the reference's (or question's) content words the sources must contain."""
LOW_SUPPORT = 0.5
"""Below this share of supported content words, an answer did not come from the sources."""
LOW_F1 = 0.3
"""Below this token F1 with the reference, the answer missed it."""
TOP_SHOWN = 5


@dataclass
class Diagnosis:
    question: str
    verdict: Verdict
    explanation: str
    """One or two plain sentences saying what broke and what to try."""
    evidence: dict[str, object]
    """Scores, support values and the top hits (JSON-ready)."""
    answer: str | None
    """The generated answer, when the diagnosis got as far as generating."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def render(self) -> str:
        """Plain text (print it with rich's ``markup=False``: titles may contain brackets)."""
        lines = [f"Question: {self.question}", f"Verdict: {self.verdict}", self.explanation, ""]
        lines.append("Evidence:")
        for key, value in self.evidence.items():
            if key != "top_hits":
                lines.append(f"  {key.replace('_', ' ')}: {_show(value)}")
        hits = self.evidence.get("top_hits")
        if isinstance(hits, list) and hits:
            lines.append("Top hits:")
            for hit in hits:
                stages = ", ".join(f"{k} {v:.3f}" for k, v in hit["stages"].items())
                lines.append(f"  {hit['rank']}. {hit['chunk_id']}  {hit['title']}  ({stages})")
        if self.answer is not None:
            lines += ["", f"Answer: {self.answer}"]
        return "\n".join(lines)


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple):
        return ", ".join(_show(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items()) or "none"
    if value is None:
        return "none"
    return str(value)


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def _top(hits: list[Hit]) -> list[dict[str, object]]:
    return [
        {
            "rank": h.rank,
            "chunk_id": h.chunk.chunk_id,
            "title": h.chunk.title,
            "score": h.score,
            "stages": dict(h.stages),
        }
        for h in hits[:TOP_SHOWN]
    ]


def _nothing_retrieved(
    retriever: Searcher,
    question: str,
    search: SearchConfig,
    reranker: Reranker | None,
    evidence: dict[str, object],
) -> Diagnosis:
    # Ask again without filters in hybrid mode: whatever comes back tells why the first found none.
    probe = retriever.search(question, replace(search, filters={}, mode="hybrid"), reranker)
    evidence["hits_without_filters_in_hybrid_mode"] = len(probe.hits)
    if not probe.hits:
        why = (
            "The index holds no chunks. Index your documents first: "
            "mentor rag index PATH --index INDEX."
        )
    elif search.filters:
        shown = ", ".join(f"{k}={v}" for k, v in search.filters.items())
        why = (
            f"No chunk matches the filters {shown}, but {len(probe.hits)} do without them. "
            "Loosen or drop --filter (values are matched exactly unless they contain * or ?)."
        )
    else:
        why = (
            "No word of the question occurs in the index, so BM25 found nothing. "
            "Use --mode hybrid or dense, or rephrase with the documents' own terms."
        )
    return Diagnosis(question, "nothing-retrieved", why, evidence, None)


def diagnose(
    retriever: Searcher,
    generator: Generator,
    question: str,
    *,
    reference: str | None = None,
    search: SearchConfig,
    reranker: Reranker | None = None,
    threshold: float | None = None,
    calibration: Calibration | None = None,
    sampling: SamplingConfig,
) -> Diagnosis:
    """Run retrieval, scoring, context and generation checks in order; stop at the first failure.

    ``threshold`` defaults to the calibration's; the calibration also gives the median score of
    off-domain questions, a second bar for "low".
    """
    hits = retriever.search(question, search, reranker=reranker).hits
    evidence: dict[str, object] = {
        "mode": search.mode,
        "filters": dict(search.filters),
        "hits": len(hits),
    }
    if not hits:
        return _nothing_retrieved(retriever, question, search, reranker, evidence)

    score = confidence(hits)
    if threshold is None and calibration is not None:
        threshold = calibration.threshold
    off_domain = calibration.unanswerable.p50 if calibration is not None else None
    evidence.update(
        confidence=score, threshold=threshold, off_domain_p50=off_domain, top_hits=_top(hits)
    )
    below = []
    if threshold is not None and score < threshold:
        below.append(f"the threshold {threshold:.3f}")
    if off_domain is not None and score < off_domain:
        below.append(f"the median off-domain question's {off_domain:.3f}")
    if below:
        why = (
            f"The best match scores {score:.3f}, below {_and(below)}: the documents "
            "probably do not cover this question. Add documents that do, or if they already "
            "do, rephrase with their terms or try a stronger embedder or a reranker."
        )
        return Diagnosis(question, "low-scores", why, evidence, None)

    texts = [embed_input(h.chunk) for h in hits]
    held = None if reference is None else answer_in_sources(reference, texts)
    if held is not None:
        evidence["answer_in_sources"] = held
        if held < SOURCES_HOLD:
            why = (
                f"The {len(hits)} retrieved chunks hold only {held:.0%} of the reference "
                "answer's words: retrieval found related text, not the answer. Check the "
                "answer is in the indexed documents, then try smaller chunks (re-index with "
                "--chunk-tokens), more chunks (-k), hybrid mode, or a reranker."
            )
            return Diagnosis(question, "answer-not-in-sources", why, evidence, None)

    text, _ = generate_answer(generator, question, hits, sampling=sampling)
    refused = is_refusal(text)
    grounded = support(text, texts)
    covered = answer_in_sources(question, texts)
    invented = invented_numbers(text, [*texts, question])
    evidence.update(
        refused=refused,
        support=grounded,
        unsupported=unsupported_tokens(text, texts),
        invented_numbers=invented,
        question_in_sources=covered,
    )
    if reference is None and (refused or grounded < LOW_SUPPORT) and covered < SOURCES_HOLD:
        reply = "the model refused" if refused else f"the answer is {grounded:.0%} supported"
        why = (
            f"The retrieved chunks hold only {covered:.0%} of the question's words and {reply}: "
            "the answer is likely not in what was retrieved. Add documents that cover it, or "
            "try smaller chunks, more chunks (-k) or a reranker."
        )
        return Diagnosis(question, "answer-not-in-sources", why, evidence, text)

    f1 = None if reference is None else token_f1(text, reference)
    evidence["f1_with_reference"] = f1
    held_text = (
        f"{covered:.0%} of the question's words"
        if held is None
        else f"{held:.0%} of the reference answer"
    )
    problems = []
    if refused:
        problems.append("is a refusal")
    else:
        if grounded < LOW_SUPPORT:
            problems.append(f"is only {grounded:.0%} supported by them")
        if invented:
            problems.append(f"states numbers they lack ({', '.join(invented)})")
        if f1 is not None and f1 < LOW_F1:
            problems.append(f"has token F1 {f1:.2f} with the reference")
    if problems:
        why = (
            f"The sources hold {held_text}, but the answer {_and(problems)}: the "
            "generator did not use the context. Try a larger generator, a lower temperature, "
            "or fine-tuning on your documents."
        )
        return Diagnosis(question, "generator-ignored-context", why, evidence, text)
    why = (
        f"Every stage worked: confidence {score:.3f}, the sources hold {held_text}, and the "
        f"answer is {grounded:.0%} supported by them."
    )
    return Diagnosis(question, "ok", why, evidence, text)
