"""``mentor advise``: which method fits your situation, why, what it costs, and how to watch it.

mentor advise --documents --freshness weekly
mentor advise --config examples/advisor/edge-device-2gb.yaml --json
mentor advise --config my-situation.yaml --costs my-costs.yaml
mentor advise --interactive
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mentor.utils.cli import fail

console = Console()
err = Console(stderr=True)


def advise_cmd(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Situation YAML (fields as below); flags override it."),
    ] = None,
    costs: Annotated[
        Path | None,
        typer.Option("--costs", help="Cost model YAML overriding any default price or rate."),
    ] = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", help="Ask for every field, offering current values.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the advice as JSON.")] = False,
    task: Annotated[str | None, typer.Option(help="chat, classification or extraction.")] = None,
    freshness: Annotated[
        str | None,
        typer.Option(help="How knowledge changes: static, monthly, weekly, daily, realtime."),
    ] = None,
    citations: Annotated[
        bool | None,
        typer.Option("--citations/--no-citations", help="Answers must cite their sources."),
    ] = None,
    documents: Annotated[
        bool | None,
        typer.Option("--documents/--no-documents", help="A document collection or feed exists."),
    ] = None,
    document_count: Annotated[
        int | None, typer.Option(help="Documents in the collection (for indexing costs).")
    ] = None,
    secret: Annotated[
        bool | None,
        typer.Option("--secret/--no-secret", help="Documents or data must stay on your machines."),
    ] = None,
    labels: Annotated[
        int | None, typer.Option("--labels", help="Labelled examples of the wanted behaviour.")
    ] = None,
    unlabelled: Annotated[
        bool | None,
        typer.Option("--unlabelled/--no-unlabelled", help="Plenty of unlabelled in-domain text."),
    ] = None,
    teacher: Annotated[
        bool | None,
        typer.Option("--teacher/--no-teacher", help="A larger model can act as teacher."),
    ] = None,
    new_capability: Annotated[
        bool | None,
        typer.Option(
            "--new-capability/--no-new-capability", help="A skill the base model lacks is needed."
        ),
    ] = None,
    hosted_only: Annotated[
        bool | None,
        typer.Option("--hosted-only/--no-hosted-only", help="Only a hosted API model may serve."),
    ] = None,
    hardware: Annotated[
        str | None,
        typer.Option(help="Serving hardware: server_gpu, cpu_server, laptop, edge, mobile."),
    ] = None,
    memory_gb: Annotated[
        float | None, typer.Option(help="Memory for the model on that hardware, GB.")
    ] = None,
    latency_ms: Annotated[
        int | None, typer.Option("--latency-ms", help="Longest acceptable answer time, ms.")
    ] = None,
    budget: Annotated[
        str | None, typer.Option(help="low, medium, high, or a yearly amount in USD.")
    ] = None,
    queries_per_day: Annotated[int | None, typer.Option(help="Expected queries per day.")] = None,
    tokens_per_query: Annotated[
        int | None, typer.Option(help="Tokens per query, prompt and answer together.")
    ] = None,
    incumbent: Annotated[
        str | None,
        typer.Option(help="What you run today (kept until a measured change beats it)."),
    ] = None,
) -> None:
    """Recommend RAG, fine-tuning, distillation, quantization or a mix for your situation: the
    branch of reasoning, a cost estimate (one-time, yearly, per query, break-even against a
    hosted API), a fallback and a monitoring plan. Unset fields take the YAML's or the defaults."""
    from mentor.advisor.costs import load_cost_model
    from mentor.advisor.report import advise, render
    from mentor.advisor.situation import ask_situation, load_situation

    overrides = {
        "task": task,
        "freshness": freshness,
        "citations_required": citations,
        "documents": documents,
        "document_count": document_count,
        "secret_documents": secret,
        "labelled_examples": labels,
        "unlabelled_text": unlabelled,
        "teacher_available": teacher,
        "new_capability": new_capability,
        "hosted_model_only": hosted_only,
        "hardware": hardware,
        "memory_gb": memory_gb,
        "latency_budget_ms": latency_ms,
        "budget": budget,
        "queries_per_day": queries_per_day,
        "tokens_per_query": tokens_per_query,
        "incumbent": incumbent,
    }
    try:
        situation = load_situation(config, overrides)
        cost_model = load_cost_model(costs)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if interactive:
        situation = ask_situation(situation)
    advice = advise(situation, cost_model)
    if as_json:
        typer.echo(json.dumps(advice.to_dict(), indent=2, ensure_ascii=False))
    else:
        render(advice, console)
