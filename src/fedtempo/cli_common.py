"""What the ``fedtempo`` commands share: the consoles, the ``--set`` option, the error exit."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value: key.path=value (repeatable)."),
]


def fail(message: object) -> typer.Exit:
    """Print ``message`` as an error; the exit (code 2) for the caller to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)
