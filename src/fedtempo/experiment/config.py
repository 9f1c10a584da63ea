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
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from fedtempo.errors import ConfigError
from fedtempo.experiment.sections import (
    AvailabilityConfig,
    ComputeConfig,
    DataConfig,
    DevicesConfig,
    EvalConfig,
    JobConfig,
    LinkConfig,
    MaflConfig,
    ModelConfig,
    PartitionConfig,
    Section,
    StopConfig,
    SyntheticConfig,
    TaskConfig,
    TrainConfig,
)
from fedtempo.experiment.servers import (
    SERVER_CONFIGS,
    AsyncConfig,
    AsyncFedEDConfig,
    FedAsyncConfig,
    FedAvgServer,
    FedBuffConfig,
    PruningConfig,
    ServerConfig,
    SplitConfig,
)

__all__ = [
    "SERVER_CONFIGS",
    "AsyncFedEDConfig",
    "AvailabilityConfig",
    "ComputeConfig",
    "DataConfig",
    "DevicesConfig",
    "EvalConfig",
    "ExperimentConfig",
    "FedAsyncConfig",
    "FedBuffConfig",
    "LinkConfig",
    "MaflConfig",
    "ModelConfig",
    "PartitionConfig",
    "PruningConfig",
    "ServerConfig",
    "SplitConfig",
    "StopConfig",
    "SyntheticConfig",
    "TaskConfig",
    "TrainConfig",
    "load",
    "to_dict",
    "validate",
]

# Sections that only one family of runs reads: a user who sets them for the other family is told.
SINGLE_ONLY = ("data", "partition", "model", "train")
MULTI_ONLY = ("mafl", "tasks")


class ExperimentConfig(Section):
    name: str = "default"
    seed: int = Field(0, ge=0)
    threads: int = Field(1, ge=1)
    executor: Literal["auto", "inline", "process", "ray"] = "auto"
    batch_clients: Literal["auto", "on", "off"] = "auto"
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    ray_address: str | None = None
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    server: ServerConfig = FedAvgServer()
    devices: DevicesConfig = DevicesConfig()
    eval: EvalConfig = EvalConfig(interval=5.0)
    job: JobConfig = JobConfig()
    stop: StopConfig = StopConfig()
    tasks: list[TaskConfig] = Field(default_factory=list)
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
            isinstance(self.server, AsyncConfig)
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
        if self.data.synthetic.lazy:
            _check_lazy(self)
        return self


def _check_lazy(config: ExperimentConfig) -> None:
    """Lazily generated Synthetic devices are their own clients, and nothing of them is held."""
    if config.data.dataset != "synthetic":
        raise ValueError(
            "data.synthetic.lazy: only data.dataset = 'synthetic' is generated per device, "
            f"got {config.data.dataset!r}"
        )
    if config.partition.scheme != "natural":
        raise ValueError(
            "partition.scheme: lazily generated devices are the clients (needs 'natural'), "
            f"got {config.partition.scheme!r}"
        )
    if config.partition.client_test_fraction > 0:
        raise ValueError(
            "partition.client_test_fraction: lazily generated devices keep their own test "
            "samples (data.test_fraction); set it to 0"
        )
    if config.server.algorithm == "pruned":
        raise ValueError(
            "data.synthetic.lazy: algorithm 'pruned' evaluates every device's personal model, "
            "which needs the data set in memory; set lazy = false"
        )


def _check_tasks(config: ExperimentConfig) -> None:
    n = config.mafl.devices
    names = [t.name for t in config.tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"tasks: names must differ, got {names}")
    for t in config.tasks:
        if t.data.synthetic.lazy:
            raise ValueError(
                f"tasks.{t.name}.data.synthetic.lazy: MA-FL lays each task's clients on device "
                "ids in memory; set lazy = false"
            )
        ids = t.devices if t.devices is not None else list(range(t.partition.num_clients))
        bad = [d for d in ids if not 0 <= d < n]
        if bad or len(set(ids)) != len(ids):
            raise ValueError(
                f"tasks.{t.name}.devices: ids must be distinct and in 0..{n - 1} "
                f"(mafl.devices = {n}), got {ids}"
            )


def _server_keys(algorithm: str) -> str:
    cls = SERVER_CONFIGS[algorithm]
    return ", ".join(k for k in cls.model_fields if k != "algorithm")


def _format_error(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    kind = err["type"]
    algorithm = None
    if len(loc) >= 2 and loc[0] == "server" and loc[1] in SERVER_CONFIGS:
        algorithm, loc = loc[1], [loc[0], *loc[2:]]  # drop the union's tag from the path
    path = ".".join(loc) or "config"
    if kind == "extra_forbidden":
        if algorithm is None or len(loc) != 2:
            return f"{path}: unknown key"
        owners = [a for a, cls in SERVER_CONFIGS.items() if loc[1] in cls.model_fields]
        what = f"does not apply to server.algorithm = {algorithm!r}" if owners else "unknown key"
        return f"{path}: {what} (its keys: {_server_keys(algorithm)})"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"{path}: bad value {err.get('input')!r} (allowed: {allowed})"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return (
            f"{path}.algorithm: bad value {ctx.get('tag')!r} (allowed: {ctx.get('expected_tags')})"
        )
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    return f"{path}: {err['msg'].lower()} (got {err.get('input')!r})"


def _algorithm(data: Mapping[str, Any]) -> Any:
    server = data.get("server", {})
    return server.get("algorithm", "fedavg") if isinstance(server, dict) else None


def _misplaced(data: Mapping[str, Any], algorithm: Any) -> list[str]:
    """Sections the chosen kind of run would silently ignore."""
    if algorithm == "mafl":
        return [
            f"{key}: does not apply to server.algorithm = 'mafl' (each [[tasks]] entry sets its "
            "data, partition, model and lr; [mafl] sets iterations and batch)"
            for key in SINGLE_ONLY
            if key in data
        ]
    if "mafl" in data and "tasks" not in data:  # with [[tasks]], the model validator names it
        return [f"mafl: applies to server.algorithm = 'mafl' only, got {algorithm!r}"]
    return []


def defaults(algorithm: Any = "fedavg") -> dict[str, Any]:
    """The embedded default as plain data, with ``algorithm``'s own [server] defaults."""
    base = ExperimentConfig().model_dump()
    if isinstance(algorithm, str) and algorithm in SERVER_CONFIGS:
        base["server"] = SERVER_CONFIGS[algorithm]().model_dump()
    return base


def merge_tables(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def with_algorithm(data: dict[str, Any], algorithm: str) -> dict[str, Any]:
    """The same run under ``algorithm`` (a comparison: SplitFed's config as FedAvg): its
    [server] table keeps the keys ``algorithm`` accepts and drops the others, by the caller's
    explicit choice (``validate`` itself never drops a key)."""
    if algorithm not in SERVER_CONFIGS:
        raise ConfigError(
            f"server.algorithm: bad value {algorithm!r} (allowed: {list(SERVER_CONFIGS)})"
        )
    fields = SERVER_CONFIGS[algorithm].model_fields
    server = {k: v for k, v in data.get("server", {}).items() if k in fields}
    return {**data, "server": {**server, "algorithm": algorithm}}


def validate(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a plain dict (parsed TOML) into an ExperimentConfig, or raise ConfigError.

    ``data`` is laid over the defaults (the [server] defaults of its algorithm), so a table may
    set only some of its keys (``devices.compute = { sigma = 0 }`` keeps the default median).
    A key of another algorithm, or a section the run would not read, is an error naming it.
    """
    algorithm = _algorithm(data)
    lines = _misplaced(data, algorithm)
    if not lines:
        try:
            return ExperimentConfig.model_validate(merge_tables(defaults(algorithm), data))
        except ValidationError as exc:
            lines = [_format_error(e) for e in exc.errors()]
    raise ConfigError(f"{source}: " + "; ".join(lines))


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
    laying the file's own keys over the base's, table by table (a ``[server]`` naming another
    algorithm replaces the base's instead)."""
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
    below = read_layers(path.parent / base, (*seen, path.resolve()))
    over_server = data.get("server")
    if isinstance(over_server, dict) and "algorithm" in over_server:
        base_server = below.get("server")
        if (
            isinstance(base_server, dict)
            and base_server.get("algorithm") != over_server["algorithm"]
        ):
            below.pop("server")  # another algorithm: its [server] keys would not apply
    return merge_tables(below, data)


def load(path: Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a TOML file (None: the embedded default) and apply ``--set`` overrides."""
    data: dict[str, Any] = read_layers(path) if path is not None else {}
    source = str(path) if path is not None else "default config"
    return validate(apply_overrides(data, overrides or []), source)


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The fully resolved config as plain data, only the sections its kind of run reads (None
    values dropped: TOML has no null); ``validate(to_dict(c)) == c``."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if v is not None}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    data = strip(config.model_dump(mode="python"))
    unread = SINGLE_ONLY if config.server.algorithm == "mafl" else MULTI_ONLY
    return {k: v for k, v in data.items() if k not in unread}
