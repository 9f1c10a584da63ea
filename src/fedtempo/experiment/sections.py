"""The sections of an experiment config other than ``[server]``: data, partition, model, local
training, devices, evaluation, stopping, and MA-FL's ``[mafl]`` and ``[[tasks]]``. Frozen pydantic
models; every key has a default and a documented unit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """A config table: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticConfig(Section):
    """LEAF Synthetic(alpha, beta) generator parameters. ``lazy``: each device's samples are
    generated from its own stream when it trains (memory holds two counts per device: a million
    devices fit), instead of all devices up front from one stream (other samples, same law);
    the global test set is then the test samples of ``eval.test_devices`` devices."""

    alpha: float = Field(0.5, ge=0)
    beta: float = Field(0.5, ge=0)
    size_mean: float = 4.0
    size_sigma: float = Field(2.0, ge=0)
    min_size: int = Field(50, ge=1)
    lazy: bool = False


class DataConfig(Section):
    dataset: Literal["digits", "mnist", "fashion-mnist", "synthetic"] = "digits"
    root: str | None = None
    test_fraction: float = Field(0.2, gt=0, lt=1)
    synthetic: SyntheticConfig = SyntheticConfig()


class PartitionConfig(Section):
    scheme: Literal["iid", "dirichlet", "shards", "power-law", "natural"] = "dirichlet"
    num_clients: int = Field(20, ge=1)
    alpha: float = 0.5
    shards_per_client: int = 2
    sigma: float = 1.0
    seed: int | None = Field(None, ge=0)
    client_test_fraction: float = Field(0.0, ge=0, lt=1)


class ModelConfig(Section):
    name: Literal["logreg", "mlp", "cnn-s", "femnist-cnn", "char-lstm", "effnetv2-tiny"] = "mlp"


class TrainConfig(Section):
    epochs: int = Field(1, ge=1)
    iterations: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)


class ComputeConfig(Section):
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


class LinkConfig(Section):
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


class AvailabilityConfig(Section):
    """always, or FLASH ready intervals (virtual time 0 = a random point of each client's trace
    when ``random_offset``, else its trace start)."""

    source: Literal["always", "flash"] = "always"
    trace: str = "traces/availability/flash_ready_times.json"
    random_offset: bool = True


class DevicesConfig(Section):
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


class TaskConfig(Section):
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


class MaflConfig(Section):
    """MA-FL (SPEC B): ``devices`` devices share ``channels`` uploads per round of ``round_s``
    seconds for ``rounds`` rounds. Schedulers: round-robin (synchronous), async-random, sca (the
    optimiser: minimises sum phi Psi + beta_e x energy over ``horizon`` rounds, re-planned every
    ``step`` rounds, after ``warmup_rounds`` round-robin rounds that fit its constants), and its
    halves alone: sca-schedule (its sessions at the nominal gamma and B) and sca-sizing
    (round-robin's sessions, its gamma and B). ``iterations`` and ``batch``: the baselines'
    gamma and B (and the optimiser's start). ``participation``: the weight of the optimiser's
    participation term (0: off), counting each device's sessions over the last
    ``memory_rounds`` rounds and the planned horizon. ``relative_gap``: each model's Psi counts
    its loss as a share of its loss at the first measurement (phi_m / G_m, first).
    ``calibrate``: the optimiser takes each model's G and k from a learning curve fitted to the
    losses measured at its plans against the progress of its committed sessions (false: from
    each plan's probe round alone). ``drift_horizon_min``: the optimiser plans with each model's
    drift horizon gamma0 at least this (None: ``iterations``; 0: the probe round's fit alone).
    ``batch_noise``: the surrogate's batch noise scale, "gradient" (sigma^2 / g^2) or
    "curvature" (an SGD step's noise cost at the task's learning rate, from Hessian-vector
    products; a study: better in W-mafl's wide setting, worse in its base one).
    ``drift_probe``: where the probe round's local drift (the decay delta that lets more local
    steps turn down) is measured: "pooled", on a sample of all the data (mostly the round's own
    devices'), or "held-out" (a study), where less than a quarter of the round's gain carries
    over to the devices that did not train in it, on those devices' data. In W-mafl that puts
    the logreg at one iteration per session, and over 8 seeds it reads -0.46 points against
    "pooled" in base (beta_e 0.001) and -0.32 to -0.48 in wide: the logreg's steps do not carry
    over within one round, yet over a run round-robin gets 88.7% from it at 5 iterations, 82.1%
    at 100, and the optimiser's sizing half 83.7% at 1 (the MA-FL issue's notes). "sessions"
    (a study): the pooled probe, and at the first measurement a multi-round probe that replays
    as many sessions per model as the run gives it (rounds x channels / models), one after
    another, at 1 to 64 local steps each; where the surrogate's form fitted to those losses
    turns down, the model's drift peak is put where it turns (``fedtempo.multitask.sessions``;
    W-mafl base: the logreg at 19 to 29 steps on every seed, the MNIST models nowhere; over 8
    seeds level with "pooled": -0.10 / -0.17 points in base, +0.25 / +0.37 in wide).
    ``model_share``: the optimiser gives every model at least this share of an equal split of
    each horizon's free upload slots (lowered for a horizon where no schedule meets it).
    ``work_visits``: the participation term counts a session by the share of the nominal
    ``iterations`` x ``batch`` samples it trains on (at most 1), not as 1 whatever its size.
    ``spare_devices``: the ``spare_devices`` devices that spend the most energy per FLOP (the
    fastest: kappa f^2) train no model but the lightest (``spare_models = "heavy"``) or none
    ("all"): round-robin's sessions (of round-robin and sca-sizing, warm-up rounds included)
    skip those pairs and give their channels to the next devices in the cycle; sca and
    sca-schedule plan as if those devices held no data of those models. 0: none spared (SPEC
    B's baselines and optimiser). ``visit_balance``: weight of the optimiser's visit-balance
    term, which charges each device's visits of a model (over the same window as the
    participation term) for straying from the mean over the model's devices, so that no device
    is visited over and over (0: off; None: 0.3, the best of 0.3, 1 and 3 in a screen of
    W-mafl over 8 seeds, or off where ``work_visits`` is on). ``normalise_steps``: each round's
    arrivals of a model are averaged with FedNova's step normalisation (Wang et al. 2020), not
    FedAvg's mean, so that a session sized to more iterations than another does not pull the
    model toward its device's data (the same model where every session has the same gamma; a
    study, off by default: it stretches the sizing's few-iteration sessions, and W-mafl's cnn
    then falls to 56%). ``min_iterations``: the least gamma the optimiser sizes a session to
    (where the latency allows it; a drift peak below it does not lower it; 1: no floor), so
    that it cannot cut the sessions on the devices where a FLOP costs most to a step or two."""

    scheduler: Literal["round-robin", "async-random", "sca", "sca-schedule", "sca-sizing"] = "sca"
    devices: int = Field(20, ge=1)
    round_s: float = Field(10.0, gt=0)
    rounds: int = Field(30, ge=1)
    channels: int = Field(5, ge=1)
    horizon: int = Field(6, ge=1)
    step: int = Field(3, ge=1)
    iterations: int = Field(20, ge=1)
    batch: int = Field(32, ge=1)
    max_iterations: int = Field(100, ge=1)
    min_iterations: int = Field(1, ge=1)
    batch_range: tuple[int, int] = (8, 128)
    beta_e: float = Field(0.0, ge=0)
    energy_budget: float | None = Field(None, gt=0)
    min_sessions: int = Field(0, ge=0)
    server_lr: float = Field(1.0, gt=0)
    warmup_rounds: int = Field(2, ge=0)
    participation: float = Field(1.0, ge=0)
    memory_rounds: int = Field(12, ge=0)
    relative_gap: bool = False
    calibrate: bool = True
    drift_horizon_min: float | None = Field(None, ge=0)
    batch_noise: Literal["curvature", "gradient"] = "gradient"
    drift_probe: Literal["held-out", "pooled", "sessions"] = "pooled"
    model_share: float = Field(1.0, ge=0, le=1)
    work_visits: bool = False
    spare_devices: int = Field(0, ge=0)
    spare_models: Literal["heavy", "all"] = "heavy"
    visit_balance: float | None = Field(None, ge=0)
    normalise_steps: bool = False

    @model_validator(mode="after")
    def _ranges(self) -> MaflConfig:
        if self.step > self.horizon:
            raise ValueError(f"mafl.step: {self.step} > mafl.horizon = {self.horizon}")
        if self.min_iterations > self.max_iterations:
            raise ValueError(
                f"mafl.min_iterations: {self.min_iterations} > mafl.max_iterations = "
                f"{self.max_iterations}"
            )
        lo, hi = self.batch_range
        if not 1 <= lo <= hi:
            raise ValueError(f"mafl.batch_range: need 1 <= min <= max, got {[lo, hi]}")
        if self.spare_devices >= self.devices:
            raise ValueError(
                f"mafl.spare_devices: {self.spare_devices} of mafl.devices = {self.devices} "
                "would leave no device to train on; use fewer"
            )
        if self.spare_devices and self.scheduler == "async-random":
            raise ValueError(
                "mafl.spare_devices: applies to round-robin and the sca schedulers, not to "
                "mafl.scheduler = 'async-random'"
            )
        if self.work_visits and self.visit_balance:
            raise ValueError(
                "mafl.visit_balance: counts whole sessions; it cannot be combined with "
                "mafl.work_visits = true (leave it unset, or 0)"
            )
        if self.scheduler.startswith("sca") and self.warmup_rounds < 1:
            raise ValueError(
                "mafl.warmup_rounds: the sca scheduler fits its constants on warm-up rounds; "
                "set at least 1"
            )
        return self

    @property
    def balance_weight(self) -> float:
        """The visit-balance weight the optimiser plans with."""
        if self.visit_balance is not None:
            return self.visit_balance
        return 0.0 if self.work_visits else 0.3


class JobConfig(Section):
    """How the service runs this config as a job (``fedtempo job create``; the simulator
    ignores it). Wall seconds. A round closes when its whole cohort has uploaded, or at
    ``deadline_s`` with at least ``quorum`` updates (else it fails and a new one starts);
    ``gather_s``: how long a round waits for more parties once ``quorum`` of them ask;
    ``task_timeout_s``: an asynchronous task not answered by then is given up. ``close``:
    "quorum" closes a round as soon as ``quorum`` updates are in (the rest of its cohort is
    then late), as in the JIT aggregation setting (SPEC C)."""

    quorum: int = Field(1, ge=1)
    close: Literal["cohort", "quorum"] = "cohort"
    deadline_s: float | None = Field(300.0, gt=0)
    gather_s: float = Field(5.0, ge=0)
    task_timeout_s: float = Field(600.0, gt=0)


class EvalConfig(Section):
    """``interval``: virtual seconds between evaluations (0: only the final one, at the end).
    ``test_devices``: how many devices, drawn from the stream ("eval-devices", task), lend their
    test samples to the global test set of lazily generated data (data.synthetic.lazy)."""

    interval: float = Field(0.0, ge=0)
    test_devices: int = Field(2000, ge=1)


class StopConfig(Section):
    virtual_time: float | None = Field(None, gt=0)
