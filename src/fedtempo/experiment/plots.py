"""Plots of results (matplotlib, no display needed; imported when a plot is drawn, so that the
processes that never plot, a server or a party, do not pay for it, or ahead of the drawing in a
background thread: ``warm_up``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedtempo.sim.recorder import Evaluation


def accuracy_plot(
    curves: Sequence[tuple[str, Sequence[Evaluation]]], path: Path, title: str = ""
) -> None:
    """Test accuracy versus virtual time, one line per (label, evaluations)."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, evals in curves:
        ax.plot(
            [e.time for e in evals],
            [100 * e.accuracy for e in evals],
            label=label,
            marker="." if len(evals) < 40 else None,
        )
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if len(curves) > 1 or (curves and curves[0][0]):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def warm_up() -> threading.Thread:
    """Import matplotlib in a background thread: a run that will plot starts this as its
    clock stops, so that the import (half a second) overlaps the final evaluation, which uses
    one core, instead of following it (during the simulation every core is training).
    ``_pyplot`` later waits on Python's import lock if the import is still under way."""
    thread = threading.Thread(target=_pyplot, name="fedtempo-import-matplotlib")
    thread.start()
    return thread
