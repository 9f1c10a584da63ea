"""Typed experiment configuration: TOML -> frozen pydantic models, validated at the edge.

Only this package reads config files. An unknown key or a bad value raises ConfigError with the
key path and, where there is a fixed set, the allowed values. ``ExperimentConfig()`` (all
defaults) is the embedded default experiment: scikit-learn digits, 20 clients, Dirichlet 0.5,
heterogeneous speeds, FedAvg.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedtempo.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticConfig(_Section):
    """LEAF Synthetic(alpha, beta) generator parameters."""

    alpha: float = Field(0.5, ge=0)
    beta: float = Field(0.5, ge=0)
    size_mean: float = 4.0
    size_sigma: float = Field(2.0, ge=0)
    min_size: int = Field(50, ge=1)


class DataConfig(_Section):
    dataset: Literal["digits", "mnist", "fashion-mnist", "synthetic"] = "digits"
    root: str | None = None
    test_fraction: float = Field(0.2, gt=0, lt=1)
    synthetic: SyntheticConfig = SyntheticConfig()


class PartitionConfig(_Section):
    scheme: Literal["iid", "dirichlet", "shards", "power-law", "natural"] = "dirichlet"
    num_clients: int = Field(20, ge=1)
    alpha: float = 0.5
    shards_per_client: int = 2
    sigma: float = 1.0
    seed: int | None = Field(None, ge=0)
    client_test_fraction: float = Field(0.0, ge=0, lt=1)


class ModelConfig(_Section):
    name: Literal["logreg", "mlp", "cnn-s", "femnist-cnn", "char-lstm", "effnetv2-tiny"] = "mlp"


class TrainConfig(_Section):
    epochs: int = Field(1, ge=1)
    iterations: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)


class FedAsyncConfig(_Section):
    """FedAsync (Xie et al. 2019): a_t = alpha * s(t - tau); client proximal term rho."""

    alpha: float = Field(0.6, gt=0, le=1)
    staleness: Literal["constant", "polynomial", "hinge"] = "polynomial"
    poly_a: float = Field(0.5, ge=0)
    hinge_a: float = Field(10.0, ge=0)
    hinge_b: float = Field(6.0, ge=0)
    rho: float = Field(0.005, ge=0)


class FedBuffConfig(_Section):
    """FedBuff (Nguyen et al. 2022): apply the mean of every ``buffer_size`` deltas."""

    buffer_size: int = Field(10, ge=1)
    server_lr: float = Field(1.0, gt=0)
    staleness_weight: bool = False
    by_samples: bool = False


class AsyncFedEDConfig(_Section):
    """AsyncFedED (Wang et al. 2022); the paper's values are unknown, these are our defaults."""

    lam: float = Field(1.0, gt=0)
    epsilon: float = Field(1.0, gt=0)
    gamma_bar: float = Field(2.0, ge=0)
    kappa: float = Field(1.0, ge=0)
    k_init: int = Field(5, ge=1)
    k_max: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _k(self) -> AsyncFedEDConfig:
        if self.k_init > self.k_max:
            raise ValueError(
                f"server.asyncfeded.k_init: {self.k_init} is above k_max = {self.k_max}"
            )
        return self


class PruningConfig(_Section):
    """Partial-model pruning and personalization (SPEC E; ``algorithm = "pruned"``).

    ``personal``: layer names kept on the devices (default: the model's last layer; [] for
    none, which is FedAvg). ``policy``: kkt (per-round pruning ratios and bandwidth from the KKT
    conditions under the latency threshold) or fixed (every device prunes ``ratio`` with an equal
    bandwidth share; ratio 0 = personalization without pruning). ``threshold_s``: the latency
    threshold; unset, ``threshold_factor`` x the slowest device's unpruned latency on the first
    round's channel with equal shares. ``bandwidth_hz``: total uplink bandwidth shared by a
    round's devices."""

    personal: tuple[str, ...] | None = None
    policy: Literal["kkt", "fixed"] = "kkt"
    ratio: float = Field(0.0, ge=0, lt=1)
    rho_max: float = Field(0.9, ge=0, lt=1)
    bandwidth_hz: float = Field(10e6, gt=0)
    threshold_s: float | None = Field(None, gt=0)
    threshold_factor: float = Field(0.5, gt=0)
    personal_iterations: int = Field(0, ge=0)


class SplitConfig(_Section):
    """Split federated learning (SPEC D; ``algorithm = "splitfed"``; the model must be
    splittable: cnn-s or effnetv2-tiny). ``planner``: how each round's cuts and server shares are
    chosen: optimal (exact, by bisection on the round latency), alternating (the paper's
    alternating optimisation, which can stop short of the optimum), exhaustive (every cut
    combination; small cohorts only), plain (every device trains the whole model: FedAvg's
    timing), fixed (``fixed_cut`` for all, optimised shares), equal (equal shares, optimised
    cuts), random (random cuts, optimised shares).
    ``server_flops``: the edge server's FLOP/s; unset, ``server_factor`` x the median device's."""

    planner: Literal[
        "alternating", "optimal", "exhaustive", "plain", "fixed", "equal", "random"
    ] = "optimal"
    fixed_cut: int = Field(1, ge=1)
    server_flops: float | None = Field(None, gt=0)
    server_factor: float = Field(20.0, gt=0)


SYNC_ALGORITHMS = ("fedavg", "fedprox", "pruned", "splitfed", "mafl")


class ServerConfig(_Section):
    """Synchronous (fedavg, fedprox, pruned, splitfed: ``rounds`` of ``clients_per_round``) or
    asynchronous (fedasync, fedbuff, asyncfeded: ``concurrency`` clients at once until
    ``max_updates`` updates arrived or ``stop.virtual_time``)."""

    algorithm: Literal[
        "fedavg", "fedprox", "fedasync", "fedbuff", "asyncfeded", "pruned", "splitfed", "mafl"
    ] = "fedavg"
    rounds: int = Field(40, ge=1)
    clients_per_round: int = Field(10, ge=1)
    deadline: float | None = Field(None, gt=0)
    server_lr: float = Field(1.0, gt=0)
    mu: float = Field(0.01, ge=0)
    concurrency: int = Field(10, ge=1)
    max_updates: int | None = Field(None, ge=1)
    dispatch: Literal["random", "round-robin"] = "random"
    fedasync: FedAsyncConfig = FedAsyncConfig()
    fedbuff: FedBuffConfig = FedBuffConfig()
    asyncfeded: AsyncFedEDConfig = AsyncFedEDConfig()
    pruning: PruningConfig = PruningConfig()
    split: SplitConfig = SplitConfig()

    @property
    def is_async(self) -> bool:
        return self.algorithm not in SYNC_ALGORITHMS


class ComputeConfig(_Section):
    """Device compute speed. ``median_flops``: FLOP/s of the median device. Sources:
    lognormal (``sigma``), training-latency (FLHetBench phones: slowdown = latency / median,
    per-session noise from the measured std when ``jitter``), ai-benchmark (CPU score ratio)."""

    source: Literal["lognormal", "training-latency", "ai-benchmark"] = "lognormal"
    median_flops: float = Field(2e9, gt=0)
    sigma: float = Field(0.7, ge=0)
    trace: str | None = None
    model: Literal["ResNet", "Vit"] = "ResNet"
    jitter: bool = True
    kappa: float = Field(1e-28, ge=0)


class LinkConfig(_Section):
    """One direction of the device links. kinds: lognormal (``median_mbps``, ``sigma``), trace
    (a folder of throughput traces, rates x ``scale``), wireless (Shannon rate over
    ``bandwidth_hz`` at ``power_w``, distance uniform in ``distance_m``, Rayleigh fading and
    ``shadowing_db`` log-normal shadowing redrawn every ``coherence_s``)."""

    kind: Literal["lognormal", "trace", "wireless"] = "lognormal"
    median_mbps: float = Field(2.0, gt=0)
    sigma: float = Field(0.5, ge=0)
    trace: str = "traces/bandwidth/fcc"
    scale: float = Field(1.0, gt=0)
    bandwidth_hz: float = Field(1e6, gt=0)
    power_w: float = Field(0.2, gt=0)
    distance_m: tuple[float, float] = (100.0, 500.0)
    shadowing_db: float = Field(8.0, ge=0)
    coherence_s: float = Field(10.0, gt=0)
    noise_dbm_hz: float = -174.0

    @model_validator(mode="after")
    def _distances(self) -> LinkConfig:
        lo, hi = self.distance_m
        if not 0 < lo <= hi:
            raise ValueError(f"distance_m: need 0 < min <= max, got {list(self.distance_m)}")
        return self


class AvailabilityConfig(_Section):
    """always, or FLASH ready intervals (virtual time 0 = a random point of each client's trace
    when ``random_offset``, else its trace start)."""

    source: Literal["always", "flash"] = "always"
    trace: str = "traces/availability/flash_ready_times.json"
    random_offset: bool = True


class DevicesConfig(_Section):
    """The device population. Traces are found under ``traces_root``, else like data sets."""

    compute: ComputeConfig = ComputeConfig()
    uplink: LinkConfig = LinkConfig(median_mbps=2.0)
    downlink: LinkConfig = LinkConfig(median_mbps=10.0, power_w=1.0)
    tx_power_w: float = Field(0.2, gt=0)
    availability: AvailabilityConfig = AvailabilityConfig()
    failure_probability: float = Field(0.0, ge=0, lt=1)
    shared_uplink: bool = False
    strict: bool = False
    traces_root: str | None = None

    @model_validator(mode="after")
    def _shared(self) -> DevicesConfig:
        if self.shared_uplink and self.uplink.kind != "wireless":
            raise ValueError(
                "devices.shared_uplink: splitting a total bandwidth needs "
                f"devices.uplink.kind = 'wireless', got {self.uplink.kind!r}"
            )
        return self


class TaskConfig(_Section):
    """One model of a multi-model run (``server.algorithm = "mafl"``): its data, partition over
    the devices that hold it (``devices``: their ids, as many as ``partition.num_clients``;
    default the first ones), model, client learning rate, weight phi_m in the objective, and
    ``warm_rounds`` FedAvg rounds of pre-training over its devices before the run (0 = cold)."""

    name: str
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    lr: float = Field(0.05, gt=0)
    weight: float = Field(1.0, gt=0)
    warm_rounds: int = Field(0, ge=0)
    devices: list[int] | None = None

    @model_validator(mode="after")
    def _devices(self) -> TaskConfig:
        if self.devices is not None and len(self.devices) != self.partition.num_clients:
            raise ValueError(
                f"tasks.{self.name}.devices: {len(self.devices)} device ids for "
                f"partition.num_clients = {self.partition.num_clients}"
            )
        return self


class MaflConfig(_Section):
    """MA-FL (SPEC B): ``devices`` devices share ``channels`` uploads per round of ``round_s``
    seconds for ``rounds`` rounds. Schedulers: round-robin (synchronous), async-random, sca (the
    optimiser: minimises sum phi Psi + beta_e x energy over ``horizon`` rounds, re-planned every
    ``step`` rounds, after ``warmup_rounds`` round-robin rounds that fit its constants).
    ``iterations`` and ``batch``: the baselines' gamma and B (and the optimiser's start)."""

    scheduler: Literal["round-robin", "async-random", "sca"] = "sca"
    devices: int = Field(20, ge=1)
    round_s: float = Field(10.0, gt=0)
    rounds: int = Field(30, ge=1)
    channels: int = Field(5, ge=1)
    horizon: int = Field(6, ge=1)
    step: int = Field(3, ge=1)
    iterations: int = Field(20, ge=1)
    batch: int = Field(32, ge=1)
    max_iterations: int = Field(100, ge=1)
    batch_range: tuple[int, int] = (8, 128)
    beta_e: float = Field(0.0, ge=0)
    energy_budget: float | None = Field(None, gt=0)
    min_sessions: int = Field(0, ge=0)
    server_lr: float = Field(1.0, gt=0)
    warmup_rounds: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> MaflConfig:
        if self.step > self.horizon:
            raise ValueError(f"mafl.step: {self.step} > mafl.horizon = {self.horizon}")
        lo, hi = self.batch_range
        if not 1 <= lo <= hi:
            raise ValueError(f"mafl.batch_range: need 1 <= min <= max, got {[lo, hi]}")
        if self.scheduler == "sca" and self.warmup_rounds < 1:
            raise ValueError(
                "mafl.warmup_rounds: the sca scheduler fits its constants on warm-up rounds; "
                "set at least 1"
            )
        return self


class EvalConfig(_Section):
    interval: float = Field(0.0, ge=0)


class StopConfig(_Section):
    virtual_time: float | None = Field(None, gt=0)


class ExperimentConfig(_Section):
    name: str = "default"
    seed: int = Field(0, ge=0)
    threads: int = Field(1, ge=1)
    executor: Literal["inline", "process", "ray"] = "inline"
    batch_clients: Literal["auto", "on", "off"] = "auto"
    workers: int = Field(2, ge=1)
    ray_address: str | None = None
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    server: ServerConfig = ServerConfig()
    devices: DevicesConfig = DevicesConfig()
    eval: EvalConfig = EvalConfig(interval=5.0)
    stop: StopConfig = StopConfig()
    tasks: list[TaskConfig] = []
    mafl: MaflConfig = MaflConfig()

    def _multitask(self) -> None:
        if self.server.algorithm == "mafl" and not self.tasks:
            raise ValueError(
                "tasks: algorithm 'mafl' trains several models; list them as [[tasks]]"
            )
        if self.tasks and self.server.algorithm != "mafl":
            raise ValueError(
                f"server.algorithm: [[tasks]] are trained by 'mafl', got {self.server.algorithm!r}"
            )
        if self.tasks:
            _check_tasks(self)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if (
            self.server.is_async
            and self.server.max_updates is None
            and (self.stop.virtual_time is None)
        ):
            raise ValueError(
                f"server.max_updates: an asynchronous run ({self.server.algorithm!r}) needs "
                "server.max_updates or stop.virtual_time to know when to stop"
            )
        if self.server.algorithm == "pruned":
            if self.partition.client_test_fraction <= 0:
                raise ValueError(
                    "partition.client_test_fraction: algorithm 'pruned' evaluates every device "
                    "on its own test split; set a fraction > 0 (e.g. 0.2)"
                )
            if self.devices.uplink.kind != "wireless":
                raise ValueError(
                    "devices.uplink.kind: algorithm 'pruned' allocates wireless bandwidth; "
                    f"needs 'wireless', got {self.devices.uplink.kind!r}"
                )
        if self.server.algorithm == "splitfed" and self.devices.shared_uplink:
            raise ValueError(
                "devices.shared_uplink: algorithm 'splitfed' gives every device its own link "
                "(set shared_uplink = false)"
            )
        self._multitask()
        if self.partition.scheme == "natural" and self.data.dataset != "synthetic":
            raise ValueError(
                "partition.scheme: 'natural' needs a naturally federated data set "
                f"(data.dataset = 'synthetic'), got {self.data.dataset!r}"
            )
        return self


def _check_tasks(config: ExperimentConfig) -> None:
    n = config.mafl.devices
    names = [t.name for t in config.tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"tasks: names must differ, got {names}")
    for t in config.tasks:
        ids = t.devices if t.devices is not None else list(range(t.partition.num_clients))
        bad = [d for d in ids if not 0 <= d < n]
        if bad or len(set(ids)) != len(ids):
            raise ValueError(
                f"tasks.{t.name}.devices: ids must be distinct and in 0..{n - 1} "
                f"(mafl.devices = {n}), got {ids}"
            )


def _format_error(err: Mapping[str, Any]) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown key"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"{path}: bad value {err.get('input')!r} (allowed: {allowed})"
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    return f"{path}: {err['msg'].lower()} (got {err.get('input')!r})"


def merge_tables(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def validate(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a plain dict (parsed TOML) into an ExperimentConfig, or raise ConfigError.

    ``data`` is laid over the defaults, so a table may set only some of its keys
    (``devices.compute_flops = { sigma = 0 }`` keeps the default median).
    """
    try:
        return ExperimentConfig.model_validate(merge_tables(ExperimentConfig().model_dump(), data))
    except ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); the value is read as TOML, else as a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.path=value`` override applied."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {k} is not a table")
            node = child
        node[keys[-1]] = value
    return out


def read_layers(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Parse a TOML config, following ``extends = "other.toml"`` (relative to the file) and
    laying the file's own keys over the base's, table by table."""
    path = Path(path)
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected a file name, got {base!r}")
    return merge_tables(read_layers(path.parent / base, (*seen, path.resolve())), data)


def load(path: Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a TOML file (None: the embedded default) and apply ``--set`` overrides."""
    data: dict[str, Any] = read_layers(path) if path is not None else {}
    source = str(path) if path is not None else "default config"
    return validate(apply_overrides(data, overrides or []), source)


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The fully resolved config as plain data (None values dropped: TOML has no null)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if v is not None}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(config.model_dump(mode="python"))
