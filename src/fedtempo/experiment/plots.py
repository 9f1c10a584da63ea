"""Plots of results (matplotlib, no display needed; imported when a plot is drawn, so that the
processes that never plot, a server or a party, do not pay for it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedtempo.sim.recorder import Evaluation


def accuracy_plot(
    curves: Sequence[tuple[str, Sequence[Evaluation]]], path: Path, title: str = ""
) -> None:
    """Test accuracy versus virtual time, one line per (label, evaluations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
