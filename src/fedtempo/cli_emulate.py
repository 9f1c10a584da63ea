"""``fedtempo emulate``: a config's population as party processes against a service, with an
evaluator that reports each model version's test accuracy."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fedtempo.cli_common import SetOption, console, err_console
from fedtempo.cli_common import fail as _fail
from fedtempo.cli_deploy import AdminOpt, CaOpt, ServerOpt, _admin, _call
from fedtempo.errors import FedTempoError


def emulate(
    config: Annotated[Path, typer.Argument(help="The run config whose population to emulate.")],
    server: ServerOpt,
    admin: AdminOpt,
    job: Annotated[str, typer.Option("--job", help="The job (from `fedtempo job create`).")],
    time_scale: Annotated[float, typer.Option(help="Wall seconds per virtual second.")] = 0.05,
    ca: CaOpt = None,
    creds: Annotated[Path, typer.Option(help="Folder for the parties' credentials.")] = Path(
        "runs/emulate"
    ),
    overrides: SetOption = None,
    evaluate_every_s: Annotated[
        float,
        typer.Option(
            "--evaluate-every-s",
            help="Evaluate each new model version on the config's test set this often and "
            "report it to the service (the dashboard's accuracy over time); 0: only the last.",
        ),
    ] = 1.0,
) -> None:
    """Start a config's population as party processes: each trains its shard for real and
    sleeps its device's compute and transfer times (scaled), so arrivals mimic the simulator."""
    from fedtempo.experiment.config import load
    from fedtempo.experiment.deploy import paces
    from fedtempo.service import auth

    try:
        cfg = load(config, overrides or [])
        pace = paces(cfg, time_scale)
    except FedTempoError as exc:
        raise _fail(exc) from None
    adm = _admin(server, admin, ca)
    folder = creds / job
    procs = []
    for i, p in enumerate(pace):
        path = folder / f"party-{i}.json"
        if not path.exists():
            key = auth.new_key()
            _call(adm.enroll, job, f"party-{i}", auth.b64(auth.public_key_bytes(key)))
            auth.Credential(server, job, f"party-{i}", auth.private_bytes(key)).write(path)
        cmd = [
            sys.executable,
            "-c",
            "from fedtempo.cli import app; app()",
            "client",
            "--credential",
            str(path),
            "--partition",
            str(config),
            "--index",
            str(i),
            "--pace",
            f"{p.download_s},{p.compute_s},{p.upload_s},{p.epochs}",
        ]
        if ca is not None:
            cmd += ["--ca", str(ca)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    start = time.monotonic()
    try:
        accuracy = _evaluate_until_done(procs, cfg, adm, job, evaluate_every_s)
    except FedTempoError as exc:
        accuracy = None
        err_console.print(f"no accuracy: {exc}")
    codes = [p.wait() for p in procs]
    status = _call(adm.status, job)
    console.print(
        f"{len(procs)} parties done in {time.monotonic() - start:.1f} s "
        f"(exit codes {sorted(set(codes))}); job {job}: {status['status']}, "
        f"version {status['version']}"
    )
    if accuracy is not None:
        console.print(f"final accuracy on the config's test set: {accuracy:.4f}")


def _evaluate_until_done(
    procs: list[subprocess.Popen[bytes]], cfg: Any, adm: Any, job: str, every_s: float
) -> float:
    """While the parties run, evaluate each new version of the job's model on ``cfg``'s test
    set every ``every_s`` (0: the last one only) and report it (``POST .../evaluations``);
    returns the last version's accuracy."""
    from fedtempo.experiment.deploy import model_evaluator

    evaluate, samples = model_evaluator(cfg)
    last, accuracy = -1, 0.0
    while True:
        finished = all(p.poll() is not None for p in procs)
        if finished or every_s > 0:
            blob, version = _call(adm.model, job)
            if version != last:
                accuracy, loss = evaluate(blob)
                finite = loss if math.isfinite(loss) else None  # a diverged model has no loss
                _call(adm.evaluate, job, version, accuracy, samples, finite)
                last = version
        if finished:
            return accuracy
        time.sleep(every_s if every_s > 0 else 0.2)
