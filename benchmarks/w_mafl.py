"""W-mafl (BENCHMARKS.md): several models at once, energy versus accuracy.

    python benchmarks/w_mafl.py [--setting base|wide] [--seeds 0 1 2] [--jobs 2] [--quick]
        [--set mafl.KEY=VALUE ...] [--tag NAME] [--reuse benchmarks/results/w_mafl.json]

Mean accuracy: over the 3 tasks, each task's test accuracy averaged over the last 30 virtual
seconds (the evaluations every 15 s swing by several points from one round's arrivals to the
next); the single last evaluation is kept as ``last_accuracy``. Figures are medians over seeds;
next to them, each optimiser point paired with the best baseline point on the same seeds
(``*_paired_*``: median accuracy difference and energy ratio, seeds at least as accurate).

Settings: ``base`` is configs/w_mafl.toml (20 devices, C = 5 uploads per round); ``wide`` is
configs/w_mafl_wide.toml (40 devices, C = 10), so the result is not tuned to one setting.
Schedulers: the baselines (synchronous round-robin and asynchronous random, fixed gamma and B)
over gamma x B, their Pareto front being the baseline; the SCA optimiser (``sca``) and each of
its halves alone (``sca-schedule``: its sessions at the nominal gamma and B; ``sca-sizing``:
round-robin's sessions, its gamma and B) over beta_E; ``round-robin-long``, round-robin at
gamma 80 and 100, B 8 (beyond the baselines' grid, at the iterations the optimiser may size
up to), outside the targets' front, with the optimisers' figures against the front it extends
(``*_vs_extended_*``, ``*_extended_*``) next to them. Figures per scheduler: its Pareto front,
the energy it needs to reach the best baseline's mean accuracy (from its front, linearly
interpolated) and the saving against that baseline, its best accuracy, its largest saving at
equal accuracy anywhere along the baseline front; per point the accuracy of every task; at each
scheduler's most accurate point the sessions per device (``*_devices_unvisited``, the spread of
the counts and a heat map); the SCA objective's monotonicity and the solve time per horizon.
Results: benchmarks/results/w_mafl[_wide][_TAG].json (figures, targets and every run's record),
.png (fronts) and _sessions.png (heat maps). ``--set``: overrides of the optimisers' runs (a
study), ``--reuse``: the baselines' runs taken from an earlier results file's records where
their overrides and seed match (they take most of the time).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import json
import multiprocessing as mp
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import save_plot, tail_mean, write_results

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "base": (ROOT / "configs/w_mafl.toml", "W-mafl"),
    "wide": (ROOT / "configs/w_mafl_wide.toml", "W-mafl-wide"),
}
BASELINES = ("round-robin", "async-random")
# round-robin beyond the baselines' gamma grid (<= 40), at the iterations the optimiser may size
# up to (max_iterations 100, B 8): not a BENCHMARKS.md baseline, so outside the targets' front;
# the optimiser's figures against the front extended by it are reported next to them
LONGER = "round-robin-long"
OPTIMISERS = ("sca", "sca-schedule", "sca-sizing")


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One run; a run that raises comes back with its error (reported, not lost with the rest)."""
    try:
        return _run(job)
    except Exception as exc:  # reported by the parent with its job
        return {**job, "error": f"{type(exc).__name__}: {exc}"[:2000]}


def _run(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from fedtempo.experiment.config import load
    from fedtempo.experiment.results import run_experiment

    torch.set_num_threads(1)
    config = load(Path(job["config"]), [*job["overrides"], "executor=inline"])
    summary, result = run_experiment(config, None)
    plans = summary.get("plans", [])
    evaluations = result.recorder.evaluations
    tasks = len(summary["tasks"])
    tail = [
        tail_mean([(e.time, e.accuracy) for e in evaluations if e.task == m], result.virtual_time)
        for m in range(tasks)
    ]
    visits = np.zeros((tasks, config.mafl.devices), dtype=int)
    for e in result.recorder.events:
        if e.kind == "dispatch":
            visits[e.task, e.client] += 1
    return {
        **job,
        "accuracy": statistics.fmean(tail),
        "last_accuracy": summary["final_accuracy"],
        "energy": summary["energy_j"],
        "tasks": [
            (t["name"], a, t["energy_j"]) for t, a in zip(summary["tasks"], tail, strict=True)
        ],
        "visits": visits.tolist(),
        "monotone": all(
            all(b <= a + 1e-9 for a, b in itertools.pairwise(h))
            for p in plans
            for h in (p["relaxed"], p["sizing"])
        ),
        "solve_s": max((p["solve_s"] for p in plans), default=0.0),
    }


def interpolate(points: list[tuple[float, float]], x: float, by: int) -> float | None:
    """Along a curve of (energy, accuracy) sorted by coordinate ``by``, the other coordinate
    at ``x`` (linear; None outside the curve)."""
    pts = sorted(points, key=lambda p: p[by])
    for a, b in itertools.pairwise(pts):
        if a[by] <= x <= b[by] and b[by] > a[by]:
            w = (x - a[by]) / (b[by] - a[by])
            return a[1 - by] + w * (b[1 - by] - a[1 - by])
    exact = [p[1 - by] for p in pts if p[by] == x]
    return exact[0] if exact else None


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto front of (energy, accuracy) points: each kept point is more accurate than
    every cheaper one."""
    out: list[tuple[float, float]] = []
    for p in sorted(points):
        if not out or p[1] > out[-1][1]:
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="base")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--set",
        dest="study",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of the optimisers' runs only (a study; the baselines stay as configured)",
    )
    ap.add_argument("--tag", default="", help="suffix of the results file's name")
    ap.add_argument(
        "--reuse",
        type=Path,
        help="an earlier results file of this setting: its baseline runs with the same "
        "overrides and seed are taken from it, not run again (runs are deterministic per seed "
        "and config; the file's code must be this code as far as the baselines go)",
    )
    args = ap.parse_args(argv)
    if args.tag in ("sessions", "quick"):  # w_mafl_sessions.png is the heat maps' file
        ap.error(f"--tag {args.tag}: taken by the results' own file names; choose another")
    config, workload = SETTINGS[args.setting]
    workload += f"-{args.tag}" if args.tag else ""
    base = ["mafl.rounds=4", "mafl.warmup_rounds=1"] if args.quick else []
    knobs = {
        "round-robin": [(5, 8), (10, 8), (20, 8), (40, 8), (5, 32), (10, 32), (20, 32), (40, 32)],
        "async-random": [(40, 8), (40, 32)],  # far below round-robin (0.5 against 0.85)
        LONGER: [(80, 8), (100, 8)],
    }
    betas = {v: [0.0, 0.001, 0.003, 0.01] for v in OPTIMISERS}
    if args.quick:
        knobs = {s: [(10, 32)] for s in BASELINES} | {LONGER: []}
        betas = {"sca": [0.0, 0.1], "sca-schedule": [0.0], "sca-sizing": [0.0]}
    jobs = []
    for seed in args.seeds:
        common = [*base, f"seed={seed}"]
        for sched in (*BASELINES, LONGER):
            for g, b in knobs[sched]:
                runs = "round-robin" if sched == LONGER else sched
                over = [*common, f"mafl.scheduler={runs}", f"mafl.iterations={g}"]
                over.append(f"mafl.batch={b}")
                knob = f"gamma{g}-B{b}"
                jobs.append({"scheduler": sched, "knob": knob, "seed": seed, "overrides": over})
        for sched in OPTIMISERS:
            for beta in betas[sched]:
                over = [*common, f"mafl.scheduler={sched}", f"mafl.beta_e={beta}", *args.study]
                knob = f"beta{beta:g}"
                jobs.append({"scheduler": sched, "knob": knob, "seed": seed, "overrides": over})
    jobs = [j | {"config": str(config)} for j in jobs]
    reused = reusable(args.reuse, jobs) if args.reuse else {}
    rows, failed = run_all([j for j in jobs if _key(j) not in reused], args.jobs)
    if reused:
        print(f"reused {len(reused)} baseline runs from {args.reuse}")
    order = {_key(j): i for i, j in enumerate(jobs)}
    rows = sorted([*rows, *reused.values()], key=lambda r: order[_key(r)])
    report(rows, workload, args.quick, len(args.seeds))
    return 1 if failed else 0


JOB_FIELDS = ("scheduler", "knob", "seed", "overrides", "config")


def _job(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in JOB_FIELDS}


def _key(job: dict[str, Any]) -> str:
    """A run's identity: its job, with the config by its file's name (not where it lies)."""
    return json.dumps(_job(job) | {"config": Path(job["config"]).name}, sort_keys=True)


def reusable(path: Path, jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The baseline runs recorded in the results file ``path`` that match one of ``jobs``
    exactly (scheduler, knob, seed, overrides, config), by job."""
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"--reuse {path}: not a W-mafl results file with rows ({e})") from None
    wanted = {_key(j) for j in jobs if j["scheduler"] in (*BASELINES, LONGER)}
    out = {}
    for r in rows:
        if not isinstance(r, dict) or not set(JOB_FIELDS) <= r.keys():
            raise SystemExit(f"--reuse {path}: a row without {', '.join(JOB_FIELDS)}")
        if _key(r) in wanted:
            out[_key(r)] = r
    return out


def run_all(jobs: list[dict[str, Any]], workers: int) -> tuple[list[dict[str, Any]], int]:
    """Every job through ``run_one`` on ``workers`` processes: (the runs that worked, in job
    order; how many failed, each printed with its error)."""
    ctx = mp.get_context("spawn")
    # a fresh process per run: a study of many runs must not carry one run's memory into the next
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1)
    with pool:
        rows = list(pool.map(run_one, jobs))
    failed = [r for r in rows if "error" in r]
    for r in failed:
        print(f"FAILED {r['scheduler']} {r['knob']} ({' '.join(r['overrides'])}): {r['error']}")
    return [r for r in rows if "error" not in r], len(failed)


def _points(rows: list[dict[str, Any]], figures: dict[str, float]) -> dict[str, list[Any]]:
    """Per scheduler, its (energy, accuracy, knob) points (medians over seeds), with every
    point's figures written to ``figures``."""
    points: dict[str, list[Any]] = {}
    for sched in (*BASELINES, LONGER, *OPTIMISERS):
        for knob in sorted({r["knob"] for r in rows if r["scheduler"] == sched}):
            mine = [r for r in rows if r["scheduler"] == sched and r["knob"] == knob]
            acc = statistics.median(r["accuracy"] for r in mine)
            energy = statistics.median(r["energy"] for r in mine)
            key = f"{sched}_{knob}"
            figures[f"{key}_mean_accuracy"], figures[f"{key}_energy_j"] = acc, energy
            figures[f"{key}_last_accuracy"] = statistics.median(r["last_accuracy"] for r in mine)
            per_task = []
            for m, (name, _, _) in enumerate(mine[0]["tasks"]):
                task_acc = statistics.median(r["tasks"][m][1] for r in mine)
                figures[f"{key}_{name}_accuracy"] = task_acc
                per_task.append(f"{name} {100 * task_acc:.1f}%")
            print(
                f"{sched:13s} {knob:>11s}: mean acc {100 * acc:6.2f}%  energy {energy:8.2f} J  "
                + "  ".join(per_task)
                + f"  ({len(mine)} seed(s))"
            )
            points.setdefault(sched, []).append((energy, acc, knob))
    return points


def _versus(
    name: str, pts: list[tuple[float, float]], best: tuple[float, float], baseline: Any
) -> dict[str, float]:
    """A scheduler's front against the best baseline point and the baseline front."""
    mine = front(pts)
    crossing = interpolate(mine, best[1], by=1)
    enough = [e for e, a in mine if a >= best[1]] + ([crossing] if crossing is not None else [])
    reach = min(enough) if enough else None
    savings = [
        1 - e / need
        for e, a in mine
        if (need := interpolate(baseline, a, by=1)) is not None and need > 0
    ]
    at_energy = interpolate(mine, best[0], by=0)
    return {
        f"{name}_energy_to_best_baseline_accuracy_j": -1.0 if reach is None else reach,
        f"{name}_saving_at_best_baseline_accuracy": -1.0 if reach is None else 1 - reach / best[0],
        f"{name}_accuracy_at_best_baseline_energy": -1.0 if at_energy is None else at_energy,
        f"{name}_max_accuracy": max(a for _, a in mine),
        f"{name}_best_saving_at_equal_accuracy": max(savings) if savings else -1.0,
    }


def pair(mine: list[dict[str, Any]], ref: dict[int, dict[str, Any]]) -> tuple[float, float, int]:
    """Runs ``mine`` against the runs ``ref`` (by seed) on the seeds both have: the median
    accuracy difference, the median energy ratio and the seeds ``mine`` is at least as accurate
    on."""
    both = [(r, ref[r["seed"]]) for r in mine if r["seed"] in ref]
    gain = statistics.median(a["accuracy"] - b["accuracy"] for a, b in both)
    ratio = statistics.median(a["energy"] / b["energy"] for a, b in both)
    return gain, ratio, sum(a["accuracy"] >= b["accuracy"] for a, b in both)


def paired(
    rows: list[dict[str, Any]],
    best: tuple[str, str],
    figures: dict[str, float],
    tag: str = "paired",
) -> dict[str, float]:
    """Each optimiser point against the best baseline point on the same seeds (the same data
    partition, traces and initial models): per point the median over seeds of the accuracy
    difference and of the energy ratio, and how many seeds it is at least as accurate on
    (written to ``figures``); per optimiser the energy ratio of its cheapest point whose median
    difference is >= 0 (-1: no such point). The medians of levels hinge on one seed's hard task
    (the logreg of seed 0 stays near 70% under every scheduler); a paired difference cancels
    what the seed does to every scheduler alike."""
    ref = {r["seed"]: r for r in rows if (r["scheduler"], r["knob"]) == best}
    out: dict[str, float] = {}
    for sched in OPTIMISERS:
        cheapest: float | None = None
        for knob in sorted({r["knob"] for r in rows if r["scheduler"] == sched}):
            mine = [r for r in rows if (r["scheduler"], r["knob"]) == (sched, knob)]
            if not any(r["seed"] in ref for r in mine):
                continue
            gain, ratio, ahead = pair(mine, ref)
            key = f"{sched}_{knob}_{tag}"
            figures[f"{key}_accuracy_gain"], figures[f"{key}_energy_ratio"] = gain, ratio
            figures[f"{key}_seeds_at_least_best_baseline"] = float(ahead)
            if gain >= 0 and (cheapest is None or ratio < cheapest):
                cheapest = ratio
        out[f"{sched}_{tag}_energy_ratio_at_best_baseline_accuracy"] = (
            -1.0 if cheapest is None else cheapest
        )
    return out


def report(rows: list[dict[str, Any]], workload: str, quick: bool, seeds: int) -> None:
    figures: dict[str, float] = {"seeds": float(seeds)}
    points = _points(rows, figures)
    curves = {k: [(e, a) for e, a, _ in v] for k, v in points.items()}
    baseline = front([p for s in BASELINES for p in curves[s]])
    best = max(baseline, key=lambda p: p[1])
    figures["best_baseline_energy_j"], figures["best_baseline_accuracy"] = best
    for sched in OPTIMISERS:
        figures |= _versus(sched, curves[sched], best, baseline)
    best_knob = knob_at(points, BASELINES, best)
    figures |= paired(rows, best_knob, figures)
    longer = extended(rows, points, baseline, figures) if points.get(LONGER) else []
    visits = {}
    for sched, pts in points.items():  # sessions per device at the most accurate point
        knob = max(pts, key=lambda p: p[1])[2]
        mine = [r for r in rows if r["scheduler"] == sched and r["knob"] == knob]
        counts = np.median(np.array([r["visits"] for r in mine], dtype=float), axis=0)
        visits[sched] = (knob, counts)
        figures[f"{sched}_devices_unvisited"] = float((counts == 0).sum(axis=1).mean())
        figures[f"{sched}_sessions_cv"] = float(counts.std(axis=1).mean() / counts.mean())
    solve = max(r["solve_s"] for r in rows if r["scheduler"] in OPTIMISERS)
    figures["sca_max_solve_s_per_horizon"] = solve
    monotone = all(r["monotone"] for r in rows if r["scheduler"] in OPTIMISERS)
    saving = figures["sca_saving_at_best_baseline_accuracy"]
    targets = {
        "energy_saving_at_best_baseline_accuracy": {"value": saving, "met": saving >= 0.30},
        "sca_max_accuracy_at_least_best_baseline": {
            "value": figures["sca_max_accuracy"],
            "met": figures["sca_max_accuracy"] >= best[1],
        },
        "sca_objective_non_increasing": {"value": float(monotone), "met": monotone},
        "solve_under_10s_per_horizon": {"value": solve, "met": solve < 10.0},
    }
    path = write_results(workload, figures, targets, quick, rows)
    stem = path.stem.removesuffix("_quick")
    plot(curves, workload, stem, quick)
    plot_sessions(visits, [t for t, _, _ in rows[0]["tasks"]], workload, stem, quick)
    print("results:", path)
    for sched in OPTIMISERS:
        ratio = figures[f"{sched}_paired_energy_ratio_at_best_baseline_accuracy"]
        paired_saving = "none as accurate" if ratio < 0 else f"{1 - ratio:.3g}"
        print(
            f"{sched}: saving at the best baseline's accuracy "
            f"{figures[f'{sched}_saving_at_best_baseline_accuracy']:.3g}, "
            f"best accuracy {figures[f'{sched}_max_accuracy']:.4f} "
            f"(best baseline {best[1]:.4f} at {best[0]:.1f} J); paired with the best baseline "
            f"on each seed: saving {paired_saving}"
        )
        for line in paired_lines(rows, sched, figures, "paired"):
            print(line)
    for name, t in targets.items():
        print(f"target {name}: {t['value']:.3g} -> {'met' if t['met'] else 'NOT met'}")
    for line in longer:
        print(line)


def extended(
    rows: list[dict[str, Any]],
    points: dict[str, list[Any]],
    baseline: list[tuple[float, float]],
    figures: dict[str, float],
) -> list[str]:
    """The optimisers against the baselines' front extended by round-robin at longer sessions
    (``LONGER``): the same figures as against the targets' front, keys ``*_vs_extended_*`` and
    ``*_{knob}_extended_*`` (paired with its most accurate point); returns lines to print."""
    wider = front([*baseline, *((e, a) for e, a, _ in points[LONGER])])
    best = max(wider, key=lambda p: p[1])
    figures["extended_best_baseline_energy_j"], figures["extended_best_baseline_accuracy"] = best
    knob = knob_at(points, (*BASELINES, LONGER), best)
    lines = [f"extended front (with {LONGER}): best {best[1]:.4f} at {best[0]:.1f} J ({knob})"]
    figures |= paired(rows, knob, figures, tag="extended")
    for sched in OPTIMISERS:
        mine = [(e, a) for e, a, _ in points[sched]]
        versus = _versus(f"{sched}_vs_extended", mine, best, wider)
        figures |= versus
        lines.append(
            f"{sched} vs extended: saving at its best accuracy "
            f"{versus[f'{sched}_vs_extended_saving_at_best_baseline_accuracy']:.3g}, largest "
            f"saving at equal accuracy "
            f"{versus[f'{sched}_vs_extended_best_saving_at_equal_accuracy']:.3g}"
        )
        lines += paired_lines(rows, sched, figures, "extended")
    return lines


def paired_lines(
    rows: list[dict[str, Any]], sched: str, figures: dict[str, float], tag: str
) -> list[str]:
    """One line per point of ``sched`` with the figures ``paired(..., tag=tag)`` wrote."""
    lines = []
    for knob in sorted({r["knob"] for r in rows if r["scheduler"] == sched}):
        key = f"{sched}_{knob}_{tag}"
        if f"{key}_accuracy_gain" in figures:
            lines.append(
                f"  {knob}: {100 * figures[f'{key}_accuracy_gain']:+.2f} points, energy x "
                f"{figures[f'{key}_energy_ratio']:.2f}, at least as accurate on "
                f"{figures[f'{key}_seeds_at_least_best_baseline']:.0f} seed(s)"
            )
    return lines


def knob_at(
    points: dict[str, list[Any]], schedulers: tuple[str, ...], at: tuple[float, float]
) -> tuple[str, str]:
    """The (scheduler, knob) whose median point is ``at``."""
    return next((s, k) for s in schedulers for e, a, k in points[s] if (e, a) == at)


def plot(
    curves: dict[str, list[tuple[float, float]]], workload: str, stem: str, quick: bool
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (sched, pts) in enumerate(curves.items()):
        colour = f"C{i}"
        ax.scatter([e for e, _ in pts], [100 * a for _, a in pts], color=colour, s=14, alpha=0.5)
        f = front(pts)
        ax.plot([e for e, _ in f], [100 * a for _, a in f], marker="o", color=colour, label=sched)
    ax.set_xscale("log")
    ax.set_xlabel("total energy (J)")
    ax.set_ylabel("mean accuracy over the tasks (%)")
    ax.set_title(f"{workload}: each scheduler's Pareto front (dots: every point)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_plot(fig, stem, quick)


def plot_sessions(
    visits: dict[str, tuple[str, np.ndarray]],
    tasks: list[str],
    workload: str,
    stem: str,
    quick: bool,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = (8, 1.2 + 1.2 * len(visits))
    fig, axes = plt.subplots(len(visits), 1, figsize=size, sharex=True, layout="constrained")
    top = max(float(c.max()) for _, c in visits.values())
    for ax, (sched, (knob, counts)) in zip(np.atleast_1d(axes), visits.items(), strict=True):
        image = ax.imshow(counts, aspect="auto", cmap="viridis", vmin=0, vmax=top)
        ax.set_yticks(range(len(tasks)), tasks, fontsize=7)
        ax.set_title(f"{sched} ({knob})", fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("device")
    fig.colorbar(image, ax=axes, label="sessions")
    fig.suptitle(f"{workload}: sessions per device at each scheduler's most accurate point")
    save_plot(fig, f"{stem}_sessions", quick)


if __name__ == "__main__":
    sys.exit(main())
