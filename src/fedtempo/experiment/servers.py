"""The ``[server]`` table, one model per algorithm (a pydantic union tagged by ``algorithm``).

Each algorithm accepts exactly its own keys: ``server.deadline`` under ``fedbuff`` (or any key
of another algorithm) is an error naming it, never a key that silently does nothing.
Names: ``FedAvgServer`` ... ``MaflServer`` are the ``[server]`` tables of each algorithm (on the
bases ``RoundsConfig`` and ``AsyncConfig``); ``FedAsyncConfig``, ``FedBuffConfig``,
``AsyncFedEDConfig``, ``PruningConfig`` and ``SplitConfig`` their sub-tables.
``SERVER_CONFIGS`` maps every algorithm name to its model; ``experiment.drivers.SETUPS`` maps the
models to their build functions.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from fedtempo.experiment.sections import Section


class FedAsyncConfig(Section):
    """FedAsync (Xie et al. 2019): a_t = alpha * s(t - tau); client proximal term rho."""

    alpha: float = Field(0.6, gt=0, le=1)
    staleness: Literal["constant", "polynomial", "hinge"] = "polynomial"
    poly_a: float = Field(0.5, ge=0)
    hinge_a: float = Field(10.0, ge=0)
    hinge_b: float = Field(6.0, ge=0)
    rho: float = Field(0.005, ge=0)


class FedBuffConfig(Section):
    """FedBuff (Nguyen et al. 2022): apply the mean of every ``buffer_size`` deltas."""

    buffer_size: int = Field(10, ge=1)
    server_lr: float = Field(1.0, gt=0)
    staleness_weight: bool = False
    by_samples: bool = False


class AsyncFedEDConfig(Section):
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


class PruningConfig(Section):
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


class SplitConfig(Section):
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


class ServerSection(Section):
    """What every [server] table answers: whether its algorithm is asynchronous and the
    proximal coefficient of its clients' objective (FedProx mu, FedAsync rho; 0 otherwise)."""

    is_async: ClassVar[bool] = False

    @property
    def client_prox(self) -> float:
        return 0.0


class RoundsConfig(ServerSection):
    """Synchronous rounds: ``rounds`` rounds of ``clients_per_round`` clients; ``deadline``
    (virtual seconds after a round's start) drops the stragglers."""

    rounds: int = Field(40, ge=1)
    clients_per_round: int = Field(10, ge=1)
    deadline: float | None = Field(None, gt=0)


class FedAvgServer(RoundsConfig):
    """FedAvg (McMahan et al. 2017): x <- x + server_lr x the round's sample-weighted delta.
    ``reducer``: "mean" (FedAvg), or a robust step over the deltas, "median" (coordinate-wise)
    or "trimmed_mean" (dropping the ``trim`` share at each end of every coordinate)."""

    algorithm: Literal["fedavg"] = "fedavg"
    server_lr: float = Field(1.0, gt=0)
    reducer: Literal["mean", "median", "trimmed_mean"] = "mean"
    trim: float = Field(0.1, ge=0, lt=0.5)


class FedProxServer(FedAvgServer):
    """FedProx (Li et al. 2020): FedAvg with the clients' proximal term (mu/2)||w - w_t||^2."""

    algorithm: Literal["fedprox"] = "fedprox"  # type: ignore[assignment]
    mu: float = Field(0.01, ge=0)

    @property
    def client_prox(self) -> float:
        return self.mu


class PrunedServer(RoundsConfig):
    algorithm: Literal["pruned"] = "pruned"
    pruning: PruningConfig = PruningConfig()


class SplitFedServer(RoundsConfig):
    algorithm: Literal["splitfed"] = "splitfed"
    split: SplitConfig = SplitConfig()


class AsyncConfig(ServerSection):
    """Asynchronous: ``concurrency`` clients train at once (dispatched at random among idle,
    available clients, or round-robin) until ``max_updates`` updates arrived or
    ``stop.virtual_time``."""

    is_async: ClassVar[bool] = True
    concurrency: int = Field(10, ge=1)
    max_updates: int | None = Field(None, ge=1)
    dispatch: Literal["random", "round-robin"] = "random"


class FedAsyncServer(AsyncConfig):
    algorithm: Literal["fedasync"] = "fedasync"
    fedasync: FedAsyncConfig = FedAsyncConfig()

    @property
    def client_prox(self) -> float:
        return self.fedasync.rho


class FedBuffServer(AsyncConfig):
    algorithm: Literal["fedbuff"] = "fedbuff"
    fedbuff: FedBuffConfig = FedBuffConfig()


class AsyncFedEDServer(AsyncConfig):
    algorithm: Literal["asyncfeded"] = "asyncfeded"
    asyncfeded: AsyncFedEDConfig = AsyncFedEDConfig()


class MaflServer(ServerSection):
    """MA-FL: the run is described by ``[mafl]`` and ``[[tasks]]``; ``[server]`` only names it."""

    algorithm: Literal["mafl"] = "mafl"


ServerConfig = Annotated[
    FedAvgServer
    | FedProxServer
    | FedAsyncServer
    | FedBuffServer
    | AsyncFedEDServer
    | PrunedServer
    | SplitFedServer
    | MaflServer,
    Field(discriminator="algorithm"),
]

SERVER_CONFIGS: dict[str, type[Section]] = {
    "fedavg": FedAvgServer,
    "fedprox": FedProxServer,
    "fedasync": FedAsyncServer,
    "fedbuff": FedBuffServer,
    "asyncfeded": AsyncFedEDServer,
    "pruned": PrunedServer,
    "splitfed": SplitFedServer,
    "mafl": MaflServer,
}
