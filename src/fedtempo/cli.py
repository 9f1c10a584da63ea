"""The ``fedtempo`` command line: run, compare, plan, population, data download; and the
deployment commands (serve, job, client, emulate)."""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedtempo import cli_deploy, cli_emulate
from fedtempo.cli_common import SetOption, console, err_console
from fedtempo.cli_common import fail as _fail
from fedtempo.errors import FedTempoError

REDRAW_S = 0.1  # seconds between redraws of a run's progress bar

app = typer.Typer(add_completion=False, no_args_is_help=False, help=__doc__)
data_app = typer.Typer(help="Data sets: download (opt-in, online).")
app.add_typer(data_app, name="data")
plan_app = typer.Typer(help="Plans without training (resource allocation).")
app.add_typer(plan_app, name="plan")
app.add_typer(cli_deploy.job_app, name="job")
app.command("serve")(cli_deploy.serve)
app.command("client")(cli_deploy.client)
app.command("emulate")(cli_emulate.emulate)


def _run_one(config_path: Path | None, out: Path | None, overrides: list[str]) -> dict[str, Any]:
    from fedtempo.experiment.config import load
    from fedtempo.experiment.results import run_experiment

    config = load(config_path, overrides)
    if out is None:
        out = Path("runs") / config.name
    # Redrawn from the simulation's own calls, at most every REDRAW_S, not by rich's refresh
    # thread: a process with one thread can start its worker pool by fork (sim/parallel.py).
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[clock]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        auto_refresh=False,
    ) as bar:
        job = bar.add_task(config.name, total=1.0, clock="virtual 0.0 s")
        drawn = [0.0]

        def progress(now: float, fraction: float) -> None:
            bar.update(job, completed=min(fraction, 1.0), clock=f"virtual {now:,.1f} s")
            if time.monotonic() - drawn[0] >= REDRAW_S:
                bar.refresh()
                drawn[0] = time.monotonic()

        summary, _ = run_experiment(config, out, progress)
        bar.update(job, completed=1.0)
    summary["out"] = str(out)
    return summary


def _time_to_90(summary: dict[str, Any]) -> float | None:
    """Virtual seconds to 90% accuracy; with several models, until the last of them gets there
    (None: some model never does)."""
    times = [t["time_to_accuracy_s"].get("0.9") for t in summary["tasks"]]
    return None if not times or None in times else max(times)


def _summary_table(summaries: list[dict[str, Any]]) -> Table:
    table = Table(title="fedtempo results")
    for col in (
        "run",
        "algorithm",
        "final acc %",
        "best acc %",
        "virtual s",
        "t->90% s",
        "updates",
        "MB up",
        "wall s",
    ):
        table.add_column(col, justify="right" if col not in ("run", "algorithm") else "left")
    for s in summaries:
        t90 = _time_to_90(s)
        table.add_row(
            s["name"],
            s["algorithm"],
            f"{100 * s['final_accuracy']:.2f}",
            f"{100 * s['best_accuracy']:.2f}",
            f"{s['virtual_time_s']:,.1f}",
            "never" if t90 is None else f"{t90:,.1f}",
            str(s["updates_applied"]),
            f"{s['bytes_up'] / 1e6:,.1f}",
            f"{s['wall_s']:.1f}",
        )
    return table


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="TOML config; none = the default.")] = None,
    out: Annotated[Path | None, typer.Option(help="Results folder (default runs/NAME).")] = None,
    set_: SetOption = None,
) -> None:
    """Run one experiment on the virtual clock and write its results folder."""
    try:
        summary = _run_one(config, out, set_ or [])
    except FedTempoError as exc:
        raise _fail(exc) from None
    console.print(_summary_table([summary]))
    console.print(
        f"results in [bold]{summary['out']}[/] (summary.json, evaluations.csv, "
        "events.csv, clients.csv, accuracy.png)"
    )
    _skip_teardown()


@app.command()
def compare(
    configs: Annotated[list[Path], typer.Argument(help="Two or more TOML configs.")],
    out: Annotated[Path, typer.Option(help="Folder for the runs and the joint plot.")] = Path(
        "runs/compare"
    ),
    set_: SetOption = None,
) -> None:
    """Run several configs (e.g. one per algorithm, same population and seed); one plot."""
    from fedtempo.experiment.compare import compare_runs

    try:
        summaries = compare_runs(configs, out, set_ or [], _run_one)
    except FedTempoError as exc:
        raise _fail(exc) from None
    console.print(_summary_table(summaries))
    console.print(f"plot: [bold]{out / 'accuracy.png'}[/]; table: {out / 'comparison.json'}")
    _skip_teardown()


@app.command()
def population(
    config: Annotated[Path | None, typer.Argument(help="TOML config; none = the default.")] = None,
    out: Annotated[Path, typer.Option(help="Where to write the PNG.")] = Path("population.png"),
    set_: SetOption = None,
) -> None:
    """Show the device population of a config: percentiles and a PNG of the distributions."""
    from fedtempo.experiment.build import build
    from fedtempo.experiment.config import load
    from fedtempo.experiment.report import PERCENTILES, population_plot, population_quantities
    from fedtempo.sim.recorder import Recorder

    try:
        cfg = load(config, set_ or [])
        built = build(cfg, Recorder())
    except FedTempoError as exc:
        raise _fail(exc) from None
    quantities = population_quantities(built)
    table = Table(title=f"population of {cfg.name}: {built.population.size} devices")
    table.add_column("quantity")
    table.add_column("unit")
    for p in PERCENTILES:
        table.add_column(f"p{p}", justify="right")
    for q in quantities:
        table.add_row(q.name, q.unit, *(f"{v:.3g}" for v in q.percentiles()))
    console.print(table)
    for note in built.population.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    population_plot(quantities, out)
    console.print(f"distributions: [bold]{out}[/]")


@plan_app.command("sfl")
def plan_sfl(
    config: Annotated[Path, typer.Argument(help="TOML config with algorithm = 'splitfed'.")],
    set_: SetOption = None,
) -> None:
    """Split FL: per client, the cut, server share and latency of the first round, next to the
    baselines."""
    from fedtempo.experiment.config import load
    from fedtempo.experiment.plan import plan_sfl as make_plan

    try:
        plan = make_plan(load(config, set_ or []))
    except FedTempoError as exc:
        raise _fail(exc) from None
    chosen = plan.chosen
    table = Table(title=f"SFL plan ({chosen.policy}), round 0")
    for col in ("client", "cut", "block", "server share", "latency s"):
        table.add_column(col, justify="left" if col == "block" else "right")
    for i, c in enumerate(plan.clients):
        cut = int(chosen.cuts[i])
        block = plan.blocks[cut - 1] + (" (all)" if cut == len(plan.blocks) else "")
        table.add_row(
            str(c), str(cut), block, f"{chosen.shares[i]:.3f}", f"{chosen.latency[i]:,.2f}"
        )
    console.print(table)
    plain = plan.policies["plain FL"][0].round_latency
    base = Table(title="round latency by policy")
    for col in ("policy", "round latency s", "vs plain FL", "solve ms"):
        base.add_column(col, justify="left" if col == "policy" else "right")
    for name, (alloc, secs) in plan.policies.items():
        change = alloc.round_latency / plain - 1
        base.add_row(
            name, f"{alloc.round_latency:,.2f}", f"{100 * change:+.1f}%", f"{secs * 1e3:.1f}"
        )
    console.print(base)
    for name, why in plan.skipped.items():
        console.print(f"[yellow]{name} skipped:[/] {why}", highlight=False)


@data_app.command("download")
def download(
    name: Annotated[str, typer.Argument(help="mnist or fashion-mnist")],
    dest: Annotated[Path, typer.Argument(help="Folder to put the files in.")],
) -> None:
    """Download a data set from its public mirror and verify SHA-256 checksums (needs network)."""
    from fedtempo.data.sources import IDX_DATASETS, download

    if name not in IDX_DATASETS:
        allowed = ", ".join(IDX_DATASETS)
        raise _fail(FedTempoError(f"unknown data set {name!r} (allowed: {allowed})"))
    try:
        paths = download(name, dest)
    except FedTempoError as exc:
        raise _fail(exc) from None
    console.print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))


_ENTRY: dict[str, bool] = {"main": False, "done": False}


def _skip_teardown() -> None:
    """A simulation command has written all it writes: when this process is the command line
    (``main``), it ends without the interpreter's teardown (0.4 s of freeing torch's modules and
    the run's tensors, after the exit handlers, which still all run)."""
    _ENTRY["done"] = _ENTRY["main"]


def _end_now() -> None:
    if _ENTRY["done"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main() -> None:
    """The ``fedtempo`` console entry point."""
    _ENTRY["main"] = True
    # Registered before any command imports torch (whose multiprocessing registers its own),
    # so it runs last: exit handlers run in the reverse order of registration.
    atexit.register(_end_now)
    app()


if __name__ == "__main__":
    main()
