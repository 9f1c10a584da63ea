"""The multi-job aggregation service on the virtual clock: eager, lazy, JIT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from fedtempo.sim.jit import AggregationService, JitSettings, Job

DEPLOY, FUSE = 5.0, 0.5


def _job(job: int = 0, parties: int = 4, rounds: int = 3, quorum: int = 3) -> Job:
    profile = np.array([10.0 * (p + 1) for p in range(parties)])
    return Job(job, parties, rounds, quorum, DEPLOY, FUSE, profile)


def predictable(job: int, party: int, round_: int, t0: float) -> float:
    return t0 + 10.0 * (party + 1)  # exactly the profile


def _run(policy: str, jobs: list[Job], arrival=predictable, pool: int = 10, **kw):
    env = simpy.Environment()
    svc = AggregationService(env, jobs, arrival, policy=policy, pool=pool, **kw)  # type: ignore[arg-type]
    procs = svc.start()
    env.run(until=env.all_of(procs) | env.timeout(10_000))
    svc.close()
    return svc.metrics


def test_predictable_parties_jit_adds_only_the_last_fusion() -> None:
    settings = JitSettings(safety_sd=0.0, margin_s=0.0)
    jit = _run("jit", [_job()], settings=settings)[0]
    lazy = _run("lazy", [_job()])[0]
    eager = _run("eager", [_job()])[0]
    # Quorum of 3 lands at t0 + 30; JIT's aggregator is up at 30 - 3 x 0.5, fuses the two
    # queued updates, then the third as it lands: publish at 30.5.
    assert jit.latency == pytest.approx([FUSE] * 3)
    assert jit.prediction_error == pytest.approx([0.0] * 3)
    assert lazy.latency == pytest.approx([DEPLOY + 3 * FUSE] * 3)
    assert eager.latency == pytest.approx([FUSE] * 3)
    # Aggregator-seconds: JIT holds deploy + 3 fusions + the wait for the last (= 1.5 s) ...
    assert jit.aggregator_s == pytest.approx(3 * (DEPLOY + 3 * FUSE + 0.5))
    # ... eager the whole job (deploy + 3 rounds of 30.5 s).
    assert eager.aggregator_s == pytest.approx(DEPLOY + 3 * 30.5)
    assert jit.aggregator_s < 0.25 * eager.aggregator_s
    assert jit.fallbacks == 0 and jit.completed_rounds == 3


def test_parties_that_never_arrive_do_not_hold_an_aggregator_forever() -> None:
    never = lambda job, party, r, t0: math.inf  # noqa: E731
    settings = JitSettings(grace_s=20.0)
    jit = _run("jit", [_job()], arrival=never, settings=settings)[0]
    lazy = _run("lazy", [_job()], arrival=never)[0]
    eager = _run("eager", [_job()], arrival=never)[0]
    assert jit.completed_rounds == lazy.completed_rounds == 0
    # JIT deploys at the predicted quorum (30 - 5 - 1.5), waits out the grace, releases.
    assert jit.aggregator_s == pytest.approx(DEPLOY + 3 * FUSE + 20.0)
    assert jit.fallbacks == 1
    assert lazy.aggregator_s == 0.0
    assert eager.aggregator_s == pytest.approx(10_000.0)  # held until the end


def test_late_parties_fall_back_to_arrival_driven() -> None:
    late = lambda job, party, r, t0: t0 + 100.0 * (party + 1)  # noqa: E731
    m = _run(
        "jit", [_job(rounds=1)], arrival=late, settings=JitSettings(safety_sd=0.0, grace_s=10.0)
    )[0]
    assert m.fallbacks == 1 and m.completed_rounds == 1
    assert m.latency == pytest.approx([DEPLOY + 3 * FUSE])  # then it behaves like lazy
    assert m.prediction_error == pytest.approx([30.0 - 300.0])


def test_a_tight_pool_delays_the_job_that_waits() -> None:
    # One worker. Job 0 (quorum predicted at 10) is up at 4..11; job 1 (predicted at 12) asks at
    # 6, waits until 11, deploys until 16: its latency is 16 - 12 + 2 fusions.
    a = Job(0, 2, 1, 2, DEPLOY, FUSE, np.array([10.0, 10.0]))
    b = Job(1, 2, 1, 2, DEPLOY, FUSE, np.array([12.0, 12.0]))

    def arrival(job: int, party: int, r: int, t0: float) -> float:
        return t0 + (10.0 if job == 0 else 12.0)

    m = _run("jit", [a, b], arrival=arrival, pool=1, settings=JitSettings(safety_sd=0.0))
    assert m[0].latency == pytest.approx([2 * FUSE])  # both land at once: two fusions
    assert m[1].latency == pytest.approx([16.0 - 12.0 + 2 * FUSE])
    assert m[1].aggregator_s == pytest.approx(DEPLOY + 2 * FUSE)  # held from its grant at 11
    roomy = _run("jit", [a, b], arrival=arrival, pool=2, settings=JitSettings(safety_sd=0.0))
    assert roomy[1].latency == pytest.approx([2 * FUSE])


def test_bad_jobs_are_rejected() -> None:
    with pytest.raises(ValueError, match="quorum 5"):
        Job(0, 4, 1, 5, 1.0, 1.0, np.ones(4))
    with pytest.raises(ValueError, match="pool"):
        AggregationService(simpy.Environment(), [], predictable, policy="jit", pool=0)


def test_a_quorum_earlier_than_predicted_deploys_at_once() -> None:
    # The profile says 100 s, the parties take 10: the store holds the quorum long before the
    # trigger, so JIT deploys on it (like lazy) instead of waiting for its prediction.
    slow_profile = Job(0, 4, 1, 3, DEPLOY, FUSE, np.full(4, 100.0))
    early = lambda job, party, r, t0: t0 + 10.0  # noqa: E731
    m = _run("jit", [slow_profile], arrival=early, settings=JitSettings(safety_sd=0.0))[0]
    assert m.latency == pytest.approx([DEPLOY + 3 * FUSE])
    assert m.prediction_error == pytest.approx([90.0])


def _random_arrivals(seed: int):
    from fedtempo.rng import Streams

    streams = Streams(seed)

    def arrival(job: int, party: int, r: int, t0: float) -> float:
        return t0 + 5.0 + float(streams.numpy("arrival", job, party, r).exponential(20.0))

    return arrival


def test_same_seed_same_result_and_jit_saves_on_random_parties() -> None:
    jobs = [_job(j, parties=8, rounds=4, quorum=6) for j in range(5)]
    runs = [_run("jit", jobs, arrival=_random_arrivals(s), pool=2) for s in (3, 3, 4)]
    first, again, other = ([vars(m) for m in r.values()] for r in runs)
    assert first == again
    assert first != other
    eager = _run("eager", jobs, arrival=_random_arrivals(3), pool=5)
    jit_s = sum(m["aggregator_s"] for m in first)
    assert jit_s < 0.5 * sum(m.aggregator_s for m in eager.values())


def _ladder(parties: int, quorum: int, fusion: str = "sum") -> Job:
    """Party p lands at t0 + 10 (p + 1), exactly as profiled."""
    profile = np.array([10.0 * (p + 1) for p in range(parties)])
    return Job(0, parties, 1, quorum, DEPLOY, FUSE, profile, fusion)  # type: ignore[arg-type]


def test_a_queue_bound_fuses_the_store_in_parts() -> None:
    bounded = JitSettings(safety_sd=0.0, queue_bound=2)
    # Lazy, quorum 4 landing at 10, 20, 30, 40. With a bound of 2, a worker deploys at 20, folds
    # the two queued updates (25..26) and leaves; at 40 the round's aggregator folds the partial
    # sum and the last two: publish at 40 + 5 + 3 x 0.5.
    lazy = _run("lazy", [_ladder(4, 4)], settings=bounded)[0]
    assert lazy.latency == pytest.approx([DEPLOY + 3 * FUSE])
    assert lazy.aggregator_s == pytest.approx((DEPLOY + 2 * FUSE) + (DEPLOY + 3 * FUSE))
    assert (lazy.store_peak, lazy.partial_fusions) == (2, 1)
    plain = _run("lazy", [_ladder(4, 4)], settings=JitSettings(safety_sd=0.0))[0]
    assert plain.latency == pytest.approx([DEPLOY + 4 * FUSE])
    assert (plain.store_peak, plain.partial_fusions) == (4, 0)
    # JIT triggers at 40 - 5 - 4 x 0.5 = 33; before that the bound fuses two updates at 20.
    # At 38 it folds the partial sum and the third update, then the fourth as it lands.
    jit = _run("jit", [_ladder(4, 4)], settings=bounded)[0]
    assert jit.latency == pytest.approx([FUSE])
    assert jit.aggregator_s == pytest.approx((DEPLOY + 2 * FUSE) + (40.5 - 33.0))
    assert (jit.store_peak, jit.partial_fusions) == (2, 1)
    unbounded = _run("jit", [_ladder(4, 4)], settings=JitSettings(safety_sd=0.0))[0]
    assert unbounded.aggregator_s == pytest.approx(40.5 - 33.0)
    assert unbounded.store_peak == 3


def test_a_buffer_rule_fuses_only_once_the_quorum_is_in() -> None:
    # Median-like rule, quorum 3 at 30: JIT needs no fusion lead (trigger at 30 - 5), every
    # policy fuses the three at once after the last lands, and the store holds all three
    # whatever the queue bound.
    settings = JitSettings(safety_sd=0.0, queue_bound=1)
    jit = _run("jit", [_ladder(4, 3, "buffer")], settings=settings)[0]
    assert jit.latency == pytest.approx([3 * FUSE])
    assert jit.aggregator_s == pytest.approx(DEPLOY + 3 * FUSE)
    assert (jit.store_peak, jit.partial_fusions) == (3, 0)
    eager = _run("eager", [_ladder(4, 3, "buffer")], settings=settings)[0]
    assert eager.latency == pytest.approx([3 * FUSE]) and eager.store_peak == 3
    lazy = _run("lazy", [_ladder(4, 3, "buffer")], settings=settings)[0]
    assert lazy.latency == pytest.approx([DEPLOY + 3 * FUSE]) and lazy.partial_fusions == 0


def test_jit_giving_up_keeps_what_it_fused() -> None:
    # Profiled at 10..40, the parties land at 100..400. JIT (up at 38, grace to 40 + 170 = 210)
    # has folded the updates of 100 and 200 when it leaves; the lazy aggregator at 400 folds that
    # partial sum and the last two.
    late = lambda job, party, r, t0: t0 + 100.0 * (party + 1)  # noqa: E731
    m = _run(
        "jit", [_ladder(4, 4)], arrival=late, settings=JitSettings(safety_sd=0.0, grace_s=170.0)
    )[0]
    assert m.fallbacks == 1
    assert m.latency == pytest.approx([DEPLOY + 3 * FUSE])


def test_bad_fusion_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="fusion must be"):
        Job(0, 2, 1, 1, 1.0, 1.0, np.ones(2), "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="profile has 3"):
        Job(0, 2, 1, 1, 1.0, 1.0, np.ones(3))
    with pytest.raises(ValueError, match="queue_bound"):
        JitSettings(queue_bound=0)
