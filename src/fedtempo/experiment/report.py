"""``fedtempo population``: what the devices of a config look like, before any run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtempo.experiment.build import Built

PERCENTILES = (5, 25, 50, 75, 95)
AVAILABILITY_HORIZON_S = 24 * 3600.0


@dataclass(frozen=True)
class Quantity:
    name: str
    unit: str
    values: np.ndarray

    def percentiles(self) -> list[float]:
        return [float(np.percentile(self.values, p)) for p in PERCENTILES]


def population_quantities(built: Built) -> list[Quantity]:
    """Per-client quantities of the built population: compute speed, one local round's compute
    time, link rates, availability share over 24 h, and one round's energy (compute + upload)."""
    pop, task = built.population, built.task
    n = pop.size
    clients = range(n)
    flops = np.array([task.compute_flops(c) for c in clients])
    speed = np.asarray(pop.compute.flops_per_s, dtype=np.float64)
    up = np.array([pop.uplink.mean_rate_bps(c) for c in clients])
    down = np.array([pop.downlink.mean_rate_bps(c) for c in clients])
    bits = float(task.profile.size_bits)
    energy = np.array(
        [pop.compute_energy(c, flops[c]) + pop.upload_energy(c, bits / up[c]) for c in clients]
    )
    avail = np.array([pop.availability.fraction(c, AVAILABILITY_HORIZON_S) for c in clients])
    return [
        Quantity("compute speed", "GFLOP/s", speed / 1e9),
        Quantity("local round compute", "s", flops / speed),
        Quantity("uplink", "Mbit/s", up / 1e6),
        Quantity("downlink", "Mbit/s", down / 1e6),
        Quantity("model upload", "s", bits / up),
        Quantity("availability (24 h)", "%", 100 * avail),
        Quantity("energy per round", "J", energy),
    ]


def population_plot(quantities: list[Quantity], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = (len(quantities) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows))
    for ax, q in zip(axes.flat, quantities, strict=False):
        values = q.values[np.isfinite(q.values)]
        positive = values[values > 0]
        use_log = (
            len(positive) == len(values)
            and len(values) > 1
            and (positive.max() / positive.min() > 50)
        )
        bins = np.geomspace(positive.min(), positive.max(), 30) if use_log else 30
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
        if use_log:
            ax.set_xscale("log")
        ax.set_title(q.name, fontsize=10)
        ax.set_xlabel(q.unit)
    for ax in list(axes.flat)[len(quantities) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
