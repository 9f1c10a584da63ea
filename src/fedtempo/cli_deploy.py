"""The deployment commands: ``serve``, ``job ...``, ``client`` (``emulate``: ``cli_emulate``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fedtempo.cli_common import SetOption, console
from fedtempo.cli_common import fail as _fail
from fedtempo.errors import FedTempoError

job_app = typer.Typer(help="Jobs on a fedtempo service (admin credential).")

ServerOpt = Annotated[str, typer.Option("--server", envvar="FEDTEMPO_SERVER", help="Service URL.")]
AdminOpt = Annotated[
    str,
    typer.Option(
        "--admin",
        envvar="FEDTEMPO_ADMIN",
        help="The admin credential, or @FILE to read it from a file.",
    ),
]
CaOpt = Annotated[
    Path | None,
    typer.Option("--ca", envvar="FEDTEMPO_CA", help="CA/certificate to trust (self-signed TLS)."),
]


def _token(admin: str) -> str:
    if admin.startswith("@"):
        try:
            return Path(admin[1:]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _fail(f"--admin: cannot read {admin[1:]} ({exc.strerror})") from None
    return admin.strip()


def _admin(server: str, admin: str, ca: Path | None) -> Any:
    from fedtempo.service.client import Admin

    return Admin(server, _token(admin), ca)


def _call(fn: Any, *args: Any) -> Any:
    from fedtempo.service.client import ServiceError

    try:
        return fn(*args)
    except ServiceError as exc:
        raise _fail(exc) from None


def serve(
    state: Annotated[Path, typer.Option("--state", help="State directory (resumed if present).")],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8750,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
    tls_self_signed: Annotated[
        bool, typer.Option("--tls-self-signed", help="Make a certificate for this state dir.")
    ] = False,
    admin_file: Annotated[
        Path | None,
        typer.Option("--admin-file", help="First start: write the admin credential here (0600)."),
    ] = None,
    aggregation: Annotated[
        str, typer.Option(help="When aggregator workers run: eager, lazy or jit.")
    ] = "jit",
    workers: Annotated[
        str, typer.Option(help="Aggregator workers at most at once, or ray://HOST:PORT (or 'ray').")
    ] = "2",
    grace_s: Annotated[
        float, typer.Option("--grace-s", help="JIT: release a worker this long past A_hat.")
    ] = 30.0,
    cold_workers: Annotated[
        bool,
        typer.Option(
            "--cold-workers",
            help="Start each worker as a fresh interpreter (default: forked from a warm one).",
        ),
    ] = False,
    queue_bound: Annotated[
        int | None,
        typer.Option(
            "--queue-bound", help="Fold a round's queue into a partial sum past this many updates."
        ),
    ] = None,
) -> None:
    """Serve many jobs over HTTP(S), durably (SQLite WAL + fsync'd safetensors blobs); rounds
    are fused by aggregator worker processes started as the policy says."""
    if not cold_workers and not (workers == "ray" or workers.startswith("ray://")):
        from fedtempo.service.workers import start_template

        start_template()  # the warm workers' template imports torch while we do
    from fedtempo.experiment.deploy import blueprint
    from fedtempo.service.server import ServeError
    from fedtempo.service.server import serve as run_server
    from fedtempo.service.store import StoreError

    try:
        settings, ray_address = _aggregation(aggregation, workers, grace_s, queue_bound)
        run_server(
            state,
            blueprint,
            aggregation=settings,
            ray_address=ray_address,
            cold_workers=cold_workers,
            host=host,
            port=port,
            cert=tls_cert,
            key=tls_key,
            self_signed_tls=tls_self_signed,
            admin_file=admin_file,
        )
    except (ServeError, StoreError, ValueError) as exc:
        raise _fail(exc) from None


def _aggregation(
    policy: str, workers: str, grace_s: float, queue_bound: int | None
) -> tuple[Any, str | None]:
    """``--aggregation`` / ``--workers``: the settings, and a Ray address if one was given."""
    from fedtempo.service.aggregation import AggregationSettings

    ray_address = None
    if workers == "ray" or workers.startswith("ray://"):
        ray_address, count = ("auto" if workers == "ray" else workers), 1  # the cluster's CPUs
    else:
        try:
            count = int(workers)
        except ValueError:
            raise ValueError(
                f"--workers: {workers!r} is neither a number nor a ray:// address"
            ) from None
    if policy not in ("eager", "lazy", "jit"):
        raise ValueError(f"--aggregation: {policy!r} is not one of eager, lazy, jit")
    settings = AggregationSettings(
        policy,  # type: ignore[arg-type]
        count,
        grace_s=grace_s,
        queue_bound=queue_bound,
    )
    return settings, ray_address


@job_app.command("create")
def job_create(
    config: Annotated[Path, typer.Argument(help="A run config (TOML).")],
    server: ServerOpt,
    admin: AdminOpt,
    ca: CaOpt = None,
    overrides: SetOption = None,
    name: Annotated[str | None, typer.Option(help="Job name (default: the config's).")] = None,
) -> None:
    """Create a job from a run config: model, train, server and job sections apply."""
    from fedtempo.experiment.config import load
    from fedtempo.experiment.deploy import job_spec

    try:
        cfg = load(config, overrides or [])
        spec = job_spec(cfg)
    except FedTempoError as exc:
        raise _fail(exc) from None
    job = _call(_admin(server, admin, ca).create_job, name or cfg.name, spec)
    console.print(job)


@job_app.command("list")
def job_list(server: ServerOpt, admin: AdminOpt, ca: CaOpt = None) -> None:
    """Jobs with their status, version and updates."""
    jobs = _call(_admin(server, admin, ca).jobs)
    table = Table("job", "algorithm", "status", "version", "rounds", "accepted", "rejected")
    for j in jobs:
        u = j["updates"]
        table.add_row(
            j["job"],
            j["algorithm"],
            j["status"],
            str(j["version"]),
            str(j["rounds_done"]),
            str(u["accepted"]),
            str(sum(u["rejected"].values())),
        )
    console.print(table)


@job_app.command("status")
def job_status(job: str, server: ServerOpt, admin: AdminOpt, ca: CaOpt = None) -> None:
    """One job's status as JSON: rounds, versions, parties online, updates by outcome."""
    console.print_json(json.dumps(_call(_admin(server, admin, ca).status, job)))


@job_app.command("stop")
def job_stop(job: str, server: ServerOpt, admin: AdminOpt, ca: CaOpt = None) -> None:
    """Stop a job (parties are told it is over)."""
    console.print_json(json.dumps(_call(_admin(server, admin, ca).stop, job)))


@job_app.command("model")
def job_model(
    job: str,
    out: Annotated[Path, typer.Option("--out", help="Where to write the safetensors file.")],
    server: ServerOpt,
    admin: AdminOpt,
    ca: CaOpt = None,
) -> None:
    """Download the job's current global model (safetensors)."""
    blob, version = _call(_admin(server, admin, ca).model, job)
    out.write_bytes(blob)
    console.print(f"version {version} -> {out} ({len(blob)} bytes)")


@job_app.command("enroll")
def job_enroll(
    job: str,
    party: Annotated[str, typer.Option("--party", help="The party's name in this job.")],
    server: ServerOpt,
    admin: AdminOpt,
    out: Annotated[Path | None, typer.Option("--out", help="Credential file to write.")] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Enroll this raw/base64 public key.")
    ] = None,
    ca: CaOpt = None,
) -> None:
    """Enroll a party: make its Ed25519 key pair here and write its credential file, or
    enroll a public key the party made itself (its private key never leaves it)."""
    from fedtempo.service import auth

    if public_key is not None:
        text = public_key.read_bytes().strip()
        pub = auth.b64(text) if len(text) == 32 else text.decode("ascii")
        info = _call(_admin(server, admin, ca).enroll, job, party, pub)
        console.print_json(json.dumps(info))
        return
    if out is None:
        raise _fail("--out: where to write the party's credential (or give --public-key)")
    key = auth.new_key()
    info = _call(_admin(server, admin, ca).enroll, job, party, auth.b64(auth.public_key_bytes(key)))
    auth.Credential(server, job, party, auth.private_bytes(key)).write(out)
    console.print(f"party {party} (id {info['id']}) of job {job}: credential -> {out}")


def client(
    credential: Annotated[Path, typer.Option("--credential", help="Party credential file.")],
    data: Annotated[
        Path | None, typer.Option(help="Own data: .npz or .safetensors (x, y).")
    ] = None,
    partition: Annotated[
        Path | None, typer.Option(help="Take shard --index of this config's partition.")
    ] = None,
    index: Annotated[int, typer.Option(help="Shard index with --partition.")] = 0,
    server: Annotated[str | None, typer.Option(help="Override the credential's server.")] = None,
    ca: CaOpt = None,
    max_tasks: Annotated[int | None, typer.Option(help="Stop after this many trainings.")] = None,
    pace: Annotated[
        str | None, typer.Option(help="Emulated device seconds: download,compute,upload,epochs.")
    ] = None,
) -> None:
    """Run a party: ask for work, train on local data, upload; until the job is over."""
    import dataclasses

    from fedtempo.experiment.config import load
    from fedtempo.experiment.deploy import local_trainer, read_data, shard
    from fedtempo.service.auth import Credential
    from fedtempo.service.client import ServiceError
    from fedtempo.service.party import Pace, Party

    try:
        cred = Credential.read(credential)
    except ValueError as exc:
        raise _fail(exc) from None
    if server:
        cred = dataclasses.replace(cred, server=server)
    try:
        if data is not None:
            x, y = read_data(data)
        elif partition is not None:
            x, y = shard(load(partition), index)
        else:
            raise _fail("give --data FILE or --partition CONFIG --index I")
    except FedTempoError as exc:
        raise _fail(exc) from None
    p = None
    if pace:
        try:
            d, c, u, e = (float(v) for v in pace.split(","))
        except ValueError:
            raise _fail(
                f"--pace: four numbers download,compute,upload,epochs, got {pace!r}"
            ) from None
        p = Pace(d, c, u, int(e))
    agent = Party(cred, lambda t, s: train(t, s), len(y), ca=ca, pace=p)
    try:
        info = agent.spec()
        train, _ = local_trainer(info["spec"], int(info["party_id"]), x, y)
        stats = agent.run(max_tasks)
    except ServiceError as exc:
        raise _fail(exc) from None
    console.print(
        f"{cred.party}: {stats.tasks} trainings, {stats.accepted} accepted, "
        f"rejected {stats.rejected or 0}"
    )
