"""The clock-free algorithm protocol: plan a round, then aggregate what came back.

A synchronous round algorithm never sees a clock. A driver (the SimPy simulator, or the network
service) picks the round's cohort, hands the algorithm a ``RoundView`` of what may be known at
the round's start, and gets back a ``RoundPlan``: for every client, the ``TrainingJob`` to run
and the *phases* of its timeline. The driver runs those phases on its clock (virtual or wall),
collects the clients that finished, and calls ``aggregate``. All state lives in the state
object the algorithm returns (DESIGN rules 1-3): personal parts, per-round logs, schedules.

Phase units: bits for transfers, FLOPs for computation, seconds for server work, virtual (or
wall) seconds for ``WaitUntil``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from fedtempo.algorithms.jobs import TrainingJob
from fedtempo.client.local import LocalSpec, Update
from fedtempo.models.profile import ModelProfile
from fedtempo.system.availability import Availability


@dataclass(frozen=True)
class Download:
    """The device receives ``bits`` over its downlink."""

    bits: float


@dataclass(frozen=True)
class Compute:
    """The device computes ``flops`` (at its own speed; compute energy is charged)."""

    flops: float


@dataclass(frozen=True)
class Exchange:
    """``repeat`` iterations of split training: the device computes ``flops``, sends
    ``up_bits`` (activations), the edge server works ``server_s`` seconds, and ``down_bits``
    (their gradients) come back."""

    flops: float
    up_bits: float
    server_s: float
    down_bits: float
    repeat: int


@dataclass(frozen=True)
class Upload:
    """The device sends ``bits``: over its uplink, or at ``rate_bps`` when the algorithm
    allocated the rate itself (a bandwidth share)."""

    bits: float
    rate_bps: float | None = None


@dataclass(frozen=True)
class WaitUntil:
    """The device idles until ``time`` (seconds on the driver's clock; no energy)."""

    time: float


Phase = Download | Compute | Exchange | Upload | WaitUntil


def standard_phases(bits: float, flops: float) -> tuple[Phase, ...]:
    """A FedAvg-style session: download the model, train, upload the update."""
    return (Download(bits), Compute(flops), Upload(bits))


@dataclass(frozen=True)
class ClientPlan:
    """One client's part of a round: what it trains and the phases of its timeline."""

    job: TrainingJob
    phases: tuple[Phase, ...]

    @property
    def client(self) -> int:
        return self.job.client


@dataclass(frozen=True)
class RoundPlan:
    """A round as planned: the clients that train, those the plan leaves out (``skipped``),
    and the algorithm's own record of the round (an allocation), handed back to ``aggregate``.

    By default the round ends when every planned client has finished (or at the driver's
    deadline, stragglers interrupted). ``close_at`` (seconds on the driver's clock) ends it at
    that time instead; with ``carry_over`` the sessions still running go on, and each result is
    aggregated in the round during which it arrives (strictly before that round's close).
    """

    clients: tuple[ClientPlan, ...]
    skipped: tuple[int, ...] = ()
    info: Any = None
    close_at: float | None = None
    carry_over: bool = False


@dataclass(frozen=True)
class ClientResult:
    """A client that finished: its update (bytes and energy filled in), its seconds from the
    session's start to the end of its upload, and the time the upload ended."""

    update: Update
    duration: float
    time: float


@dataclass(frozen=True)
class RoundOutcome:
    """What a round produced: the plan and the clients that finished in time (increasing id)."""

    plan: RoundPlan
    results: tuple[ClientResult, ...]


class RoundView(Protocol):
    """What an algorithm may know when a round starts: each cohort client's dispatch number
    and its expected compute time and link rates at the round's start (for a client's own
    session: the same compute draw its session will see)."""

    @property
    def now(self) -> float: ...

    @property
    def availability(self) -> Availability:
        """When each device is expected to be ready (its forecast, for planning ahead)."""
        ...

    def dispatch(self, client: int) -> int: ...

    def compute_time(self, client: int, flops: float) -> float:
        """Seconds ``client`` needs for ``flops`` in this round's session."""
        ...

    def upload_time(self, client: int, bits: float) -> float: ...

    def download_time(self, client: int, bits: float) -> float: ...

    def uplink_snr_per_hz(self, client: int) -> float:
        """The client's wireless uplink at the round's start: received SNR per Hz (p g / N0),
        for algorithms that allocate bandwidth themselves; an error on other links."""
        ...


@dataclass
class ModelState:
    """One model's global vector and version, and the algorithm's per-round log."""

    params: torch.Tensor
    version: int = 0
    log: list[Any] = field(default_factory=list)

    def model(self, task: int) -> ModelState:
        """The state of ``task``'s model (a single-model state is its own)."""
        return self


class HasModels(Protocol):
    """What a driver reads of any algorithm's state: each task's model and the log."""

    @property
    def log(self) -> list[Any]: ...

    def model(self, task: int) -> ModelState: ...


S = TypeVar("S", bound=HasModels)


class RoundAlgorithm(Protocol[S]):
    """A synchronous round algorithm (fedjax-style ``init`` + ``plan_round`` + ``aggregate``).

    Contract: ``plan_round`` changes ``state`` only to record what it committed (an MA-FL
    schedule, dispatch numbers); ``aggregate`` returns the state after the round and may update
    ``state`` in place; both are deterministic given their inputs.
    """

    def init(self, params: Mapping[int, torch.Tensor]) -> S:
        """The state before the first round from each task's initial vector (by task id)."""
        ...

    def plan_round(self, state: S, cohort: Sequence[int], view: RoundView) -> RoundPlan: ...

    def aggregate(self, state: S, outcome: RoundOutcome) -> S: ...


@dataclass(frozen=True)
class Workload:
    """What one task asks of its clients: model size and FLOPs (``profile``), the local
    procedure (``spec``) and each client's number of training samples."""

    task: int
    profile: ModelProfile
    spec: LocalSpec
    samples: Sequence[int]

    def samples_processed(self, client: int, epochs: int | None = None) -> int:
        return self.spec.samples_processed(self.samples[client], epochs)

    def flops(self, client: int, epochs: int | None = None) -> float:
        """FLOPs of one local training: train FLOPs per sample x samples processed."""
        return float(self.profile.train_flops) * self.samples_processed(client, epochs)

    def steps(self, client: int) -> int:
        return self.spec.num_steps(self.samples[client])
