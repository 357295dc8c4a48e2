"""The ``mentor`` command line: a thin layer over the library, one sub-command group per package.

Run ``mentor --help`` for the tour; every option of every command carries its own help text.
"""

from __future__ import annotations

import typer

from mentor.advisor.commands import advise_cmd
from mentor.bakeoff.commands import bakeoff_cmd
from mentor.data.commands import app as data_app
from mentor.distill.commands import distill_cmd
from mentor.doctor import doctor_cmd
from mentor.finetune.commands import adapters_app, finetune_cmd
from mentor.models.commands import app as models_app
from mentor.monitor.commands import app as monitor_app
from mentor.quantize.commands import export_cmd, quantize_cmd
from mentor.rag.commands import app as rag_app
from mentor.serve.commands import generate_cmd, serve_cmd
from mentor.utils.logs import quiet_libraries

app = typer.Typer(
    name="mentor",
    help="Teach a language model your domain (RAG, fine-tuning, distillation) and measure which "
    "way serves you best.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main() -> None:
    """Teach a language model your domain and measure which way serves you best."""
    quiet_libraries()


app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(rag_app, name="rag")
app.add_typer(adapters_app, name="adapters")
app.add_typer(monitor_app, name="monitor")
app.command("finetune")(finetune_cmd)
app.command("distill")(distill_cmd)
app.command("quantize")(quantize_cmd)
app.command("export")(export_cmd)
app.command("generate")(generate_cmd)
app.command("serve")(serve_cmd)
app.command("doctor")(doctor_cmd)
app.command("advise")(advise_cmd)
app.command("bakeoff")(bakeoff_cmd)


if __name__ == "__main__":
    app()
