"""MA-FL (issue 21): heavy models kept off the devices that spend the most energy per FLOP.

In W-mafl a FLOP costs kappa f^2 joules, and the devices' speeds f span 14x (0.43 to 6 GFLOP/s
in the base setting, seed 0), so a FLOP costs 200x more on the fastest device than on the
slowest; round-robin gives every device the same work, and the fastest quarter of the devices
spends about three quarters of its compute energy. ``mafl.spare_devices = k`` keeps the cnn and
the mlp off the k fastest devices (they train only the logreg, whose sessions cost almost
nothing) and gives their channels to the next devices in round-robin's cycle;
``mafl.spare_models = "all"`` keeps those devices out altogether. The same mask can be put on
the optimiser (sca, sca-sizing); the optimiser's points without it (``sca-beta*``) are there to
compare (``sca-schedule-beta*``: its schedule half alone), and every sca point plans with the
configuration's visit-balance term (default 0.3; ``mafl.visit_balance``). ``normalised-*``:
the optimiser and its sizing half with each round's arrivals averaged by FedNova's step
normalisation (``mafl.normalise_steps``); ``floor10-*``: the optimiser sizing no session below
10 iterations (``mafl.min_iterations``); ``batch32-*``: the optimiser and its sizing half
with B held at 32, sizing gamma alone; ``cap32-*``: the optimiser with B sized between 8 and
32; ``balance1-batch32-*``: B held at 32 and the visit-balance term at weight 1;
``heldout-*``: the drift decay fitted on the devices that did not train in the probe round
(``mafl.drift_probe``), ``heldout-floor5-*`` with the sizing's floor at 5 iterations;
``sessions-*``: the drift peak from the multi-round probe where it sees a turn. Each point is
run on the same seeds as round-robin at gamma 40, B 32 (W-mafl's best baseline) and gamma 40,
B 8 (the cheap end of its front), and paired with them seed by seed (the seeds' own spread,
6-8 points, is larger than the effects).

    python benchmarks/mafl_spare.py [--settings base wide] [--seeds 0 1 2] [--jobs 2]
        [--points rr-g40-B32 spare-rr-g40-B32 ...] [--tag seeds8]

Figures per setting and point (medians over seeds): mean and per-task accuracy, energy; paired
with each reference: the median accuracy difference, the median energy ratio and the seeds at
least as accurate. Results: benchmarks/results/mafl_spare[_TAG].json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from common import write_results
from w_mafl import SETTINGS, pair, run_all

DEVICES = {"base": 20, "wide": 40}
REFERENCES = ("rr-g40-B32", "rr-g40-B8")


def points(k: int) -> dict[str, list[str]]:
    """Each point's overrides (beyond the seed), with k spared devices."""
    rr = ["mafl.scheduler=round-robin"]
    spare = [f"mafl.spare_devices={k}"]
    out = {
        "rr-g40-B32": [*rr, "mafl.iterations=40", "mafl.batch=32"],
        "rr-g40-B8": [*rr, "mafl.iterations=40", "mafl.batch=8"],
        # beyond the baselines' grid (gamma <= 40): round-robin at the iterations the optimiser
        # may size up to with max_iterations = 100
        "rr-g80-B8": [*rr, "mafl.iterations=80", "mafl.batch=8"],
        "rr-g100-B8": [*rr, "mafl.iterations=100", "mafl.batch=8"],
        "spare-rr-g40-B32": [*rr, *spare, "mafl.iterations=40", "mafl.batch=32"],
        "spare-rr-g40-B8": [*rr, *spare, "mafl.iterations=40", "mafl.batch=8"],
        "spare-rr-g20-B32": [*rr, *spare, "mafl.iterations=20", "mafl.batch=32"],
        "exclude-rr-g40-B32": [
            *rr,
            *spare,
            "mafl.spare_models=all",
            "mafl.iterations=40",
            "mafl.batch=32",
        ],
    }
    for beta in (0.0, 0.001, 0.003):  # the optimiser without the mask
        out[f"sca-beta{beta:g}"] = ["mafl.scheduler=sca", f"mafl.beta_e={beta}"]
    for beta in (0.0, 0.01):  # the schedule half alone (nominal gamma and B)
        out[f"sca-schedule-beta{beta:g}"] = ["mafl.scheduler=sca-schedule", f"mafl.beta_e={beta}"]
    nova = ["mafl.normalise_steps=true", "mafl.beta_e=0.001"]  # FedNova's mean (a study)
    out["normalised-sca-beta0.001"] = ["mafl.scheduler=sca", *nova]
    out["normalised-sca-sizing-beta0.001"] = ["mafl.scheduler=sca-sizing", *nova]
    floor = ["mafl.scheduler=sca", "mafl.min_iterations=10", "mafl.beta_e=0.001"]  # a study
    out["floor10-sca-beta0.001"] = floor
    out["floor10-normalised-sca-beta0.001"] = [*floor, "mafl.normalise_steps=true"]
    for beta in (0.0, 0.001, 0.003, 0.01):  # B held at 32: the sizing chooses gamma alone
        fixed = ["mafl.batch_range=[32, 32]", f"mafl.beta_e={beta}"]
        out[f"batch32-sca-beta{beta:g}"] = ["mafl.scheduler=sca", *fixed]
        out[f"batch32-sca-sizing-beta{beta:g}"] = ["mafl.scheduler=sca-sizing", *fixed]
        capped = ["mafl.scheduler=sca", "mafl.batch_range=[8, 32]", f"mafl.beta_e={beta}"]
        out[f"cap32-sca-beta{beta:g}"] = capped  # B sized, at most the nominal 32
        balanced = ["mafl.scheduler=sca", "mafl.visit_balance=1.0", *fixed]
        out[f"balance1-batch32-sca-beta{beta:g}"] = balanced  # visit balance at 1, not 0.3
    for beta in (0.0, 0.001, 0.003):  # B held at 8, the cheap end of round-robin's front
        eight = ["mafl.batch=8", "mafl.batch_range=[8, 8]", f"mafl.beta_e={beta}"]
        out[f"batch8-sca-beta{beta:g}"] = ["mafl.scheduler=sca", *eight]
        out[f"batch8-sca-sizing-beta{beta:g}"] = ["mafl.scheduler=sca-sizing", *eight]
        longer = ["mafl.scheduler=sca", *eight, "mafl.max_iterations=100"]
        out[f"batch8-g100-sca-beta{beta:g}"] = longer  # gamma sized up to 100 (not 50)
    for beta in (0.0, 0.001, 0.003):  # the drift measured on the held-out devices (a study)
        held = ["mafl.scheduler=sca", "mafl.drift_probe=held-out", f"mafl.beta_e={beta}"]
        out[f"heldout-sca-beta{beta:g}"] = held
        out[f"heldout-floor5-sca-beta{beta:g}"] = [*held, "mafl.min_iterations=5"]
        replayed = ["mafl.scheduler=sca", "mafl.drift_probe=sessions", f"mafl.beta_e={beta}"]
        out[f"sessions-sca-beta{beta:g}"] = replayed
    for beta in (0.001, 0.003):
        out[f"spare-sca-beta{beta:g}"] = ["mafl.scheduler=sca", *spare, f"mafl.beta_e={beta}"]
        out[f"spare-sca-sizing-beta{beta:g}"] = [
            "mafl.scheduler=sca-sizing",
            *spare,
            f"mafl.beta_e={beta}",
        ]
    return out


def reused_references(path: Path, settings: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    """The references' per-seed runs (accuracy, energy) recorded in an earlier results file."""
    try:
        figures = json.loads(path.read_text())["figures"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"--reuse {path}: not a results file with figures ({e})") from None
    rows = []
    for setting in settings:
        for name in REFERENCES:
            for seed in seeds:
                key = f"{setting}_{name}_seed{seed}"
                if f"{key}_accuracy" not in figures:
                    continue
                acc, energy = figures[f"{key}_accuracy"], figures[f"{key}_energy_j"]
                rows.append(
                    {
                        "knob": f"{setting}_{name}",
                        "seed": seed,
                        "accuracy": acc,
                        "energy": energy,
                        "reused": True,
                    }
                )
    return rows


def summarise(
    rows: list[dict[str, Any]], setting: str, names: list[str], figures: dict[str, float]
) -> None:
    """Per point its medians, and its pairing with each reference, into ``figures``."""
    ref = {
        name: {r["seed"]: r for r in rows if r["knob"] == f"{setting}_{name}"}
        for name in REFERENCES
    }
    for name in names:
        mine = [r for r in rows if r["knob"] == f"{setting}_{name}"]
        if not mine:
            continue
        key = f"{setting}_{name}"
        acc = statistics.median(r["accuracy"] for r in mine)
        energy = statistics.median(r["energy"] for r in mine)
        figures[f"{key}_mean_accuracy"], figures[f"{key}_energy_j"] = acc, energy
        for r in mine:  # each seed's run, so that later runs on other seeds can be pooled
            figures[f"{key}_seed{r['seed']}_accuracy"] = r["accuracy"]
            figures[f"{key}_seed{r['seed']}_energy_j"] = r["energy"]
        tasks = []
        whole = all("tasks" in r for r in mine)  # reused runs carry only accuracy and energy
        for m, (task, _, _) in enumerate(mine[0]["tasks"] if whole else []):
            figures[f"{key}_{task}_accuracy"] = statistics.median(r["tasks"][m][1] for r in mine)
            tasks.append(f"{task} {100 * figures[f'{key}_{task}_accuracy']:.1f}%")
        line = f"{key:32s} {100 * acc:6.2f}% {energy:7.1f} J  " + "  ".join(tasks)
        for other, by_seed in ref.items():
            seeds = sum(r["seed"] in by_seed for r in mine)
            if not seeds or other == name:
                continue
            gain, ratio, ahead = pair(mine, by_seed)
            figures[f"{key}_vs_{other}_accuracy_gain"] = gain
            figures[f"{key}_vs_{other}_energy_ratio"] = ratio
            figures[f"{key}_vs_{other}_seeds_ahead"] = float(ahead)
            line += f" | vs {other}: {100 * gain:+.2f} pt, {ratio:.2f}x E, {ahead}/{seeds}"
        if any(r.get("solve_s") for r in mine):
            figures[f"{key}_monotone"] = float(all(r["monotone"] for r in mine))
            figures[f"{key}_max_solve_s"] = max(r["solve_s"] for r in mine)
        print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["base", "wide"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--spare", type=float, default=0.25, help="share of the devices spared")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--points", nargs="+", help="run only these points (default: all)")
    ap.add_argument("--tag", default="", help="suffix of the results file's name")
    ap.add_argument(
        "--reuse",
        type=Path,
        help="a results file of an earlier screen: its per-seed runs of the references are "
        "taken from it instead of run again (runs are deterministic per seed and config)",
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    reused = reused_references(args.reuse, args.settings, args.seeds) if args.reuse else []
    jobs = []
    names: dict[str, list[str]] = {}
    for setting in args.settings:
        k = round(args.spare * DEVICES[setting])
        chosen = points(k)
        wanted = args.points or list(chosen)
        if args.quick:
            wanted = ["rr-g40-B32", "spare-rr-g40-B32", "spare-sca-beta0.003"]
        unknown = sorted(set(wanted) - set(chosen))
        if unknown:
            ap.error(f"--points: unknown {unknown}; known: {list(chosen)}")
        chosen = {n: chosen[n] for n in wanted}
        names[setting] = list(chosen)
        for seed in args.seeds:
            for name, over in chosen.items():
                if any(r["knob"] == f"{setting}_{name}" and r["seed"] == seed for r in reused):
                    continue
                over = [f"seed={seed}", *over]
                if args.quick:
                    over += ["mafl.rounds=4", "mafl.warmup_rounds=1"]
                knob = f"{setting}_{name}"
                job = {"scheduler": name, "knob": knob, "seed": seed, "overrides": over}
                jobs.append(job | {"config": str(SETTINGS[setting][0])})
    rows, failed = run_all(jobs, args.jobs)
    rows = [*reused, *rows]
    figures: dict[str, float] = {"seeds": float(len(args.seeds)), "spare_share": args.spare}
    for setting in args.settings:
        summarise(rows, setting, names[setting], figures)
    targets: dict[str, dict[str, Any]] = {}
    for setting in args.settings:
        for name in (n for n in names[setting] if n not in REFERENCES):
            gain = figures.get(f"{setting}_{name}_vs_rr-g40-B32_accuracy_gain")
            ratio = figures.get(f"{setting}_{name}_vs_rr-g40-B32_energy_ratio")
            if gain is None or ratio is None:
                continue
            targets[f"{setting}_{name}_paired_with_best_baseline"] = {
                "value": ratio,
                "met": gain >= 0 and ratio <= 0.7,
            }
    write_results("MAFL-spare" + (f"-{args.tag}" if args.tag else ""), figures, targets, args.quick)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
