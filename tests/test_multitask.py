"""MA-FL: scheduling tensors, schedulers, the SCA optimiser and the multi-model simulator."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch

from fedtempo.alloc.mafl import (
    MaflProblem,
    Plan,
    TaskTerms,
    candidates,
    coefficients,
    drift_peak,
    effective_steps,
    objective,
    participation,
    plan,
)
from fedtempo.alloc.pruning import Infeasible
from fedtempo.errors import ConfigError
from fedtempo.experiment.config import validate as validate_config
from fedtempo.experiment.results import run_experiment
from fedtempo.multitask import (
    PlanContext,
    Schedule,
    ScheduleError,
    async_random,
    empty_schedule,
    round_robin,
    validate,
)
from fedtempo.multitask.estimate import RoundCurve, fit_round
from fedtempo.multitask.optimised import Physics, SCAScheduler, to_schedule

N, M, H = 4, 2, 5


def sched():
    return empty_schedule(N, M, H, first_round=10, iterations=5, batch=8)


def check(s, **kw):
    has_data = kw.pop("has_data", np.ones((N, M), dtype=bool))
    return validate(s, has_data, kw.pop("channels", 2), **kw)


def test_valid_schedule_gives_active_window():
    s = sched()
    s.starts[0, 1, 0] = s.uploads[0, 1, 2] = True  # rounds 10..12
    s.starts[0, 0, 3] = s.uploads[0, 0, 3] = True  # one-round session at 13
    a = check(s)
    assert a[0, 1].tolist() == [1, 1, 1, 0, 0]
    assert a[0, 0].tolist() == [0, 0, 0, 1, 0]
    assert [(x.device, x.model, x.start, x.upload) for x in s.sessions()] == [
        (0, 1, 10, 12),
        (0, 0, 13, 13),
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: (
                s.starts[1, 0].__setitem__(0, 1),
                s.uploads[1, 0].__setitem__(3, 1),
                s.starts[1, 1].__setitem__(2, 1),
                s.uploads[1, 1].__setitem__(2, 1),
            ),
            "device 1 is on models [0, 1] at once in round 12",
        ),
        (
            lambda s: s.uploads[2, 1].__setitem__(1, 1),
            "device 2 uploads model 1 in round 11 without an open session",
        ),
        (
            lambda s: (
                s.starts[3, 0].__setitem__(0, 1),
                s.starts[3, 0].__setitem__(1, 1),
                s.uploads[3, 0].__setitem__(2, 1),
            ),
            "device 3 starts model 0 in round 11 while its session of model 0 is still open",
        ),
        (
            lambda s: s.starts[0, 0].__setitem__(4, 1),
            "device 0's session of model 0 from round 14 has no upload within the horizon",
        ),
        (
            lambda s: [
                (s.starts[d, 0].__setitem__(1, 1), s.uploads[d, 0].__setitem__(1, 1))
                for d in range(3)
            ],
            "round 11 has 3 uploads for 2 channels (device, model: [(0, 0), (1, 0), (2, 0)])",
        ),
    ],
)
def test_invalid_schedules_name_device_model_round(edit, message):
    s = sched()
    edit(s)
    with pytest.raises(
        ScheduleError,
        match=message.replace("[", r"\[")
        .replace("(", r"\(")
        .replace(")", r"\)")
        .replace("]", r"\]"),
    ):
        check(s)


def test_data_availability_busy_and_sizes_are_checked():
    s = sched()
    s.starts[2, 1, 1] = s.uploads[2, 1, 1] = True
    no_data = np.ones((N, M), dtype=bool)
    no_data[2, 1] = False
    with pytest.raises(
        ScheduleError, match="device 2 has no data for model 1 but starts it in round 11"
    ):
        check(s, has_data=no_data)
    off = np.ones((N, H), dtype=bool)
    off[2, 1] = False
    with pytest.raises(ScheduleError, match="device 2 is unavailable in round 11 but on model 1"):
        check(s, available=off)
    with pytest.raises(ScheduleError, match=r"device 2 is still busy .* round 11 .* round 12"):
        check(s, busy_until=np.array([0, 0, 12, 0]))
    with pytest.raises(ScheduleError, match="round 11 has 3 uploads for 2 channels"):
        check(s, channel_used=np.array([0, 2, 0, 0, 0]))
    s.batch[2, 1] = 0
    with pytest.raises(ScheduleError, match="device 2, model 1: batch = 0"):
        check(s)
    s.batch[2, 1] = 8
    ints = Schedule(s.starts.astype(int), s.uploads.astype(int), s.iterations, s.batch, 10)
    ints.starts[2, 1, 1] = 2
    with pytest.raises(ScheduleError, match=r"S\[device 2, model 1, round 11\] = 2"):
        check(ints)


def context(seed: int = 0, horizon: int = 6) -> PlanContext:
    rng = np.random.default_rng(seed)
    n, m = 8, 3
    has = rng.random((n, m)) < 0.7
    has[:, 0] = True
    return PlanContext(
        first_round=3,
        horizon=horizon,
        has_data=has,
        available=rng.random((n, horizon)) < 0.9,
        channels=3,
        session_rounds=rng.integers(1, 3, (n, m)),
        busy_until=rng.integers(0, 6, n),
        channel_used=rng.integers(0, 2, horizon),
        iterations=10,
        batch=16,
    )


@pytest.mark.parametrize("seed", range(5))
def test_baseline_schedulers_give_valid_schedules(seed):
    ctx = context(seed)
    for s in (round_robin(ctx), async_random(ctx, np.random.default_rng(seed))):
        validate(s, ctx.has_data, ctx.channels, ctx.available, ctx.busy_until, ctx.channel_used)
        assert s.starts.sum() > 0


def problem(ctx: PlanContext, beta: float, seed: int = 0, **kw) -> MaflProblem:
    rng = np.random.default_rng(seed)
    n, m = ctx.has_data.shape
    samples = np.where(ctx.has_data, rng.integers(50, 500, (n, m)), 0).astype(float)
    terms = tuple(
        TaskTerms(gap=g, rate=0.3, spread=a0, batch_noise=30.0, local_steps=5.0, staleness=0.3)
        for g, a0 in ((2.3, 0.05), (0.4, 0.5), (1.0, 0.2))
    )[:m]
    return MaflProblem(
        terms=terms,
        samples=samples,
        train_flops=np.array([3e6, 1e6, 2e4])[:m],
        speed=rng.uniform(0.5e9, 4e9, n),
        kappa=1e-28,
        upload_j=rng.uniform(0.01, 0.1, (n, m)),
        comm_s=rng.uniform(0.1, 1.0, (n, m)),
        round_s=10.0,
        session_rounds=ctx.session_rounds,
        available=ctx.available,
        busy_from=np.maximum(ctx.busy_until - ctx.first_round, 0),
        channel_used=ctx.channel_used,
        channels=ctx.channels,
        beta_e=beta,
        iterations=ctx.iterations,
        batch=ctx.batch,
        **kw,
    )


def planned(p: MaflProblem) -> tuple[Plan, tuple[np.ndarray, np.ndarray]]:
    """``plan(p)`` and the (device, model) index of its chosen sessions."""
    r = plan(p)
    chosen = r.chosen > 0.5
    return r, (r.candidates.device[chosen], r.candidates.model[chosen])


@pytest.mark.parametrize("seed", range(4))
def test_sca_objective_never_increases_and_rounding_is_valid(seed):
    ctx = context(seed)
    p = problem(ctx, beta=0.05, seed=seed)
    result = plan(p)
    for history in (result.relaxed, result.sizing):
        assert len(history) >= 2
        assert all(b <= a + 1e-9 for a, b in itertools.pairwise(history))
    assert result.sizing[0] == pytest.approx(result.rounded)
    s = to_schedule(ctx, result)
    validate(s, ctx.has_data, ctx.channels, ctx.available, ctx.busy_until, ctx.channel_used)
    assert result.chosen.sum() > 0
    # every session's compute fits in its rounds at the chosen gamma and B
    for x in s.sessions():
        seconds = p.train_flops[x.model] * x.iterations * x.batch / p.speed[x.device]
        budget = p.session_rounds[x.device, x.model] * p.round_s - p.comm_s[x.device, x.model]
        assert seconds <= budget + 1e-9


def test_energy_falls_as_beta_rises():
    ctx = context(1)
    energies, progress = [], []
    for beta in (0.0, 0.01, 0.1, 1.0, 10.0):
        p = problem(ctx, beta=beta, seed=1)
        r = plan(p)
        c = r.candidates
        on = r.chosen > 0.5
        energies.append(float(p.energy(r.gamma, r.batch)[c.device[on], c.model[on]].sum()))
        progress.append(float((p.rho * r.gamma)[c.device[on], c.model[on]].sum()))
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(energies)), energies
    assert energies[-1] < 0.5 * energies[0]
    assert progress[0] >= progress[-1]


def test_surrogate_reduces_to_plain_step_counting():
    """With no batch noise, no drift (gamma0 -> inf) and a full-quality round (A0 -> 0), a
    session of gamma steps is worth gamma steps and one round moves the model by the arrivals'
    mean steps; more gamma and more B always help, with diminishing returns."""
    g = np.array([1.0, 5.0, 20.0])
    exact = effective_steps(g, np.full(3, 32.0), np.full(3, 500.0), 1e12, 0.0)
    np.testing.assert_allclose(exact, g, rtol=1e-9)
    h = effective_steps(g, np.full(3, 32.0), np.full(3, 500.0), 5.0, 30.0)
    assert np.all(np.diff(h) > 0) and np.all(np.diff(h / g) < 0)
    b = np.array([8.0, 32.0, 128.0])
    hb = effective_steps(np.full(3, 10.0), b, np.full(3, 500.0), 5.0, 30.0)
    assert np.all(np.diff(hb) > 0) and np.all(np.diff(hb / b) < 0)


def test_devices_with_higher_loss_are_preferred():
    """Two identical devices, one channel, one round: the one on whose data the model does
    worse (relative loss 1.5 against 0.5) gets the session."""
    ctx = PlanContext(
        first_round=0,
        horizon=1,
        has_data=np.ones((2, 1), dtype=bool),
        available=np.ones((2, 1), dtype=bool),
        channels=1,
        session_rounds=np.ones((2, 1), dtype=np.int64),
        busy_until=np.zeros(2, dtype=np.int64),
        channel_used=np.zeros(1, dtype=np.int64),
        iterations=5,
        batch=16,
    )
    for loss, expect in (((1.5, 0.5), 0), ((0.5, 1.5), 1)):
        terms = (TaskTerms(1.0, 0.3, 0.1, 30.0, 5.0, 0.0, relative_loss=np.array(loss)),)
        p = MaflProblem(
            terms=terms,
            samples=np.full((2, 1), 100.0),
            train_flops=np.array([1e6]),
            speed=np.full(2, 1e9),
            kappa=1e-28,
            upload_j=np.full((2, 1), 0.01),
            comm_s=np.full((2, 1), 0.1),
            round_s=10.0,
            session_rounds=ctx.session_rounds,
            available=ctx.available,
            busy_from=np.zeros(2, dtype=np.int64),
            channel_used=ctx.channel_used,
            channels=1,
            beta_e=0.0,
            iterations=5,
            batch=16,
        )
        r = plan(p)
        assert r.chosen.sum() == 1
        assert int(r.candidates.device[r.chosen > 0.5][0]) == expect


def test_probe_round_fit_recovers_rate_and_drift_horizon():
    gap, rate, local, quality = 1.2, 0.05, 8.0, 0.4
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64], dtype=float)
    loss = gap / (1 + rate * quality * local * np.log1p(steps / local))
    g, k, g0, delta = fit_round(RoundCurve(steps, loss, 0.3, 32), quality)
    assert g == pytest.approx(gap)
    assert k == pytest.approx(rate, rel=0.1)
    assert g0 == pytest.approx(local, rel=0.25)
    assert drift_peak(g0, delta) > 640  # a curve that never turns down: no peak in sight
    flat = RoundCurve(steps, np.full(len(steps), gap), 0.3, 32)
    assert fit_round(flat, quality)[1] <= 1e-5


def test_a_loss_curve_that_turns_down_is_fitted_with_its_peak():
    gap, rate, local, decay, quality = 1.2, 0.05, 8.0, 0.3, 0.4
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64], dtype=float)
    h = local * np.log1p(steps / local) - decay * steps
    loss = gap / (1 + rate * quality * h)
    assert loss[-1] > loss.min()  # the data rise again after their best local step
    _, k, g0, delta = fit_round(RoundCurve(steps, loss, 0.3, 32), quality)
    peak = float(drift_peak(g0, delta))
    assert peak == pytest.approx(float(drift_peak(local, decay)), rel=0.25)
    assert delta > 0 and k == pytest.approx(rate, rel=0.25)
    # the drift factor is concave and reduces to the saturating form at delta = 0
    g = np.linspace(1, 200, 50)
    assert np.all(np.diff(effective_steps(g, g * 0 + 32, g * 0 + 500, 8.0, 30.0, 0.05), 2) < 0)
    assert np.array_equal(
        effective_steps(g, g * 0 + 32, g * 0 + 500, 8.0, 30.0, 0.0),
        effective_steps(g, g * 0 + 32, g * 0 + 500, 8.0, 30.0),
    )


def test_infeasible_budget_is_reported():
    ctx = context(2)
    p = problem(ctx, beta=0.0, seed=2, energy_budget=1e-6, min_sessions=1)
    assert len(candidates(p).device) > 0
    with pytest.raises(
        Infeasible, match=r"no schedule meets the constraints \(energy budget 1e-06 J"
    ):
        plan(p)


# ---- the simulator ----------------------------------------------------------------------------


def fedavg_config(n: int, rounds: int) -> dict:
    return {
        "name": "fedavg",
        "seed": 0,
        "batch_clients": "off",
        "data": {"dataset": "digits"},
        "partition": {"num_clients": n},
        "model": {"name": "mlp"},
        "train": {"iterations": 6, "batch_size": 16, "lr": 0.1},
        "server": {"algorithm": "fedavg", "rounds": rounds, "clients_per_round": n},
        "eval": {"interval": 0.0},
    }


def mafl_config(n: int, rounds: int, scheduler: str = "round-robin", **mafl) -> dict:
    return {
        "name": "mafl",
        "seed": 0,
        "server": {"algorithm": "mafl"},
        "mafl": {
            "scheduler": scheduler,
            "devices": n,
            "rounds": rounds,
            "channels": n,
            "horizon": 2,
            "step": 2,
            "iterations": 6,
            "batch": 16,
            "round_s": 1000.0,
            "warmup_rounds": 0,
            **mafl,
        },
        "tasks": [
            {
                "name": "digits-mlp",
                "data": {"dataset": "digits"},
                "partition": {"num_clients": n},
                "model": {"name": "mlp"},
                "lr": 0.1,
            }
        ],
        "eval": {"interval": 0.0},
    }


def test_one_model_all_devices_every_round_equals_fedavg():
    _, fed = run_experiment(validate_config(fedavg_config(5, 3)), None)
    summary, ma = run_experiment(validate_config(mafl_config(5, 3)), None)
    assert torch.equal(fed.final_params[0], ma.final_params[0])
    assert summary["updates_applied"] == 15
    assert summary["tasks"][0]["sessions"] == 15


def two_tasks(scheduler: str, **mafl) -> dict:
    data = mafl_config(6, 6, scheduler, channels=2, round_s=2.0, horizon=3, step=2, **mafl)
    data["tasks"].append(
        {
            "name": "digits-logreg",
            "data": {"dataset": "digits"},
            "partition": {"num_clients": 3},
            "model": {"name": "logreg"},
            "devices": [1, 3, 5],
            "warm_rounds": 1,
        }
    )
    data["devices"] = {"compute": {"median_flops": 2e8}}
    data["eval"] = {"interval": 2.0}
    return data


def test_sca_run_is_deterministic_and_records_energy_and_plans():
    config = validate_config(two_tasks("sca", warmup_rounds=2, beta_e=0.1))
    a, ra = run_experiment(config, None)
    b, rb = run_experiment(config, None)
    for m in (0, 1):
        assert torch.equal(ra.final_params[m], rb.final_params[m])
    assert a["energy_j"] == b["energy_j"] > 0
    assert [t["name"] for t in a["tasks"]] == ["digits-mlp", "digits-logreg"]
    assert a["energy_j"] == pytest.approx(sum(t["energy_j"] for t in a["tasks"]))
    assert len(a["plans"]) == 2  # rounds 2 and 4 (after two warm-up rounds)
    for p in a["plans"]:
        assert all(y <= x + 1e-9 for x, y in zip(p["relaxed"], p["relaxed"][1:], strict=False))
    # the warm task starts better than its cold init would (0.09 here): it was pre-trained
    assert a["tasks"][1]["initial_accuracy"] > 0.25


def test_stale_deltas_are_applied_at_the_end_of_the_round_they_arrive_in():
    config = validate_config(two_tasks("async-random"))
    _, result = run_experiment(config, None)
    events = result.recorder.events
    uploads = [e for e in events if e.kind == "upload"]
    aggregates = [e for e in events if e.kind == "aggregate"]
    assert uploads and aggregates
    round_s = 2.0
    for agg in aggregates:
        assert agg.time / round_s == pytest.approx(round(agg.time / round_s))
    for up in uploads:
        end = (np.floor(up.time / round_s) + 1) * round_s
        if end <= 6 * round_s:
            assert any(a.task == up.task and a.time == pytest.approx(end) for a in aggregates)
    # some session spans more than one round (slow devices, 2 channels)
    dispatch = {(e.task, e.client, e.version): e.time for e in events if e.kind == "dispatch"}
    spans = [up.time - dispatch[(up.task, up.client, up.version)] for up in uploads]
    assert max(spans) > round_s


def test_bad_multitask_configs_are_named():
    data = mafl_config(4, 2)
    data["tasks"][0]["devices"] = [0, 1, 2, 9]
    data["tasks"][0]["partition"] = {"num_clients": 4}
    with pytest.raises(
        ConfigError, match=r"tasks.digits-mlp.devices: ids must be distinct and in 0..3"
    ):
        validate_config(data)
    data = mafl_config(4, 2, scheduler="sca", warmup_rounds=0)
    with pytest.raises(ConfigError, match=r"mafl\.warmup_rounds"):
        validate_config(data)
    data = mafl_config(4, 2)
    data["server"]["algorithm"] = "fedavg"
    with pytest.raises(ConfigError, match=r"server.algorithm: \[\[tasks\]\] are trained by 'mafl'"):
        validate_config(data)
    data = mafl_config(4, 2)
    data["tasks"][0]["data"] = {"dataset": "synthetic", "synthetic": {"lazy": True}}
    with pytest.raises(ConfigError, match=r"tasks.digits-mlp.data.synthetic.lazy"):
        validate_config(data)


def test_mafl_with_a_process_pool_is_bit_identical():
    data = two_tasks("sca", warmup_rounds=2, beta_e=0.1)
    data["devices"]["failure_probability"] = 0.2  # the timeline's failures apply here too
    _, inline = run_experiment(validate_config(data), None)
    pooled_data = {**data, "executor": "process", "workers": 2}
    _, pooled = run_experiment(validate_config(pooled_data), None)
    for m in (0, 1):
        assert torch.equal(inline.final_params[m], pooled.final_params[m])
    kinds = lambda r: [(e.time, e.kind, e.task, e.client) for e in r.recorder.events]  # noqa: E731
    assert kinds(inline) == kinds(pooled)
    assert any(e.kind == "fail" for e in inline.recorder.events)


def test_one_results_path_for_one_and_several_models(tmp_path):
    from fedtempo.experiment.config import load

    summary, _ = run_experiment(validate_config(two_tasks("round-robin")), tmp_path / "ma")
    for name in ("summary.json", "clients.csv", "events.csv", "evaluations.csv", "accuracy.png"):
        assert (tmp_path / "ma" / name).is_file(), name
    assert [t["name"] for t in summary["tasks"]] == ["digits-mlp", "digits-logreg"]
    assert load(tmp_path / "ma" / "config.toml") == validate_config(two_tasks("round-robin"))
    single, _ = run_experiment(validate_config(fedavg_config(5, 2)), tmp_path / "one")
    (row,) = single["tasks"]
    for key in ("final_accuracy", "best_accuracy", "model_version", "energy_j"):
        assert single[key] == row[key], key
    assert load(tmp_path / "one" / "config.toml") == validate_config(fedavg_config(5, 2))


def test_cli_runs_a_multi_model_config(tmp_path):
    import tomli_w
    from typer.testing import CliRunner

    from fedtempo.cli import app

    path = tmp_path / "ma.toml"
    path.write_text(tomli_w.dumps(two_tasks("round-robin")), encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "fedtempo results" in result.output and "Traceback" not in result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["algorithm"] == "mafl/round-robin" and len(summary["tasks"]) == 2


def with_dissimilarity(p: MaflProblem, z: float, **kw) -> MaflProblem:
    n = p.samples.shape[0]
    terms = tuple(dataclasses.replace(t, dissimilarity=np.full(n, z)) for t in p.terms)
    return dataclasses.replace(p, terms=terms, **kw)


def test_participation_term_is_convex_decreasing_and_reduces_to_the_old_objective():
    ctx = context(2)
    base = problem(ctx, beta=0.05, seed=2)
    c = candidates(base)
    gamma = np.full(base.samples.shape, 10)
    batch = np.full(base.samples.shape, 16)
    rng = np.random.default_rng(0)
    s = rng.random(len(c.device))
    # off (no z measured, or weight 0): J is the surrogate without it, term for term
    k_old = coefficients(base, c, gamma, batch)
    off = with_dissimilarity(base, 0.6, participation=0.0)
    assert objective(off, c, s, coefficients(off, c, gamma, batch)) == objective(base, c, s, k_old)
    on = with_dissimilarity(base, 0.6)
    k = coefficients(on, c, gamma, batch)
    assert objective(on, c, s, k) > objective(base, c, s, k_old)
    # along any line in s it is convex and it falls as sessions are added
    d = rng.random(len(c.device))
    values = [participation(k, s + t * d) for t in np.linspace(0, 3, 13)]
    assert all(b < a for a, b in itertools.pairwise(values))
    assert np.all(np.diff(values, 2) > 0)
    # recent sessions of a pair lower what a new one is worth there
    recent = np.zeros(base.samples.shape)
    recent[0, 0] = 5
    seen = dataclasses.replace(on, recent=recent)
    i = int(np.flatnonzero((c.device == 0) & (c.model == 0))[0])
    one = np.eye(len(c.device))[i]
    zero = np.zeros(len(c.device))

    def gain(q: MaflProblem) -> float:
        k = coefficients(q, c, gamma, batch)
        return participation(k, zero) - participation(k, one)

    assert 0 < gain(seen) < gain(on)


def test_participation_spreads_sessions_over_more_devices():
    """One model, four devices with the same data share, one of them much cheaper: with energy
    priced in, the optimiser without the participation term keeps going back to the cheap
    device; with it, it visits more of them."""
    n, horizon = 4, 6
    ctx = PlanContext(
        first_round=0,
        horizon=horizon,
        has_data=np.ones((n, 1), dtype=bool),
        available=np.ones((n, horizon), dtype=bool),
        channels=1,
        session_rounds=np.ones((n, 1), dtype=np.int64),
        busy_until=np.zeros(n, dtype=np.int64),
        channel_used=np.zeros(horizon, dtype=np.int64),
        iterations=5,
        batch=16,
    )
    terms = (TaskTerms(1.0, 0.3, 0.05, 30.0, 5.0, 0.0, dissimilarity=np.full(n, 0.8)),)
    p = MaflProblem(
        terms=terms,
        samples=np.full((n, 1), 100.0),
        train_flops=np.array([1e6]),
        speed=np.array([1e9, 1.5e9, 1.5e9, 1.5e9]),  # energy per FLOP ~ speed^2: 0 is cheap
        kappa=1e-27,
        upload_j=np.full((n, 1), 0.001),
        comm_s=np.full((n, 1), 0.1),
        round_s=10.0,
        session_rounds=ctx.session_rounds,
        available=ctx.available,
        busy_from=np.zeros(n, dtype=np.int64),
        channel_used=ctx.channel_used,
        channels=1,
        beta_e=0.5,
        iterations=5,
        batch=16,
    )

    def devices(q: MaflProblem) -> set[int]:
        r = plan(q, size=False)
        return {int(d) for d in r.candidates.device[r.chosen > 0.5]}

    assert devices(dataclasses.replace(p, participation=0.0)) == {0}
    assert len(devices(p)) >= 3


def test_rounding_fills_every_channel_when_energy_is_free():
    for seed in range(3):
        ctx = context(seed)
        p = problem(ctx, beta=0.0, seed=seed)
        r = plan(p)
        c, on = r.candidates, r.chosen > 0.5
        busy = np.zeros((p.samples.shape[0], ctx.horizon), dtype=bool)
        for i in np.flatnonzero(on):
            busy[c.device[i], c.start[i] : c.upload[i] + 1] = True
        used = np.bincount(c.upload[on], minlength=ctx.horizon) + ctx.channel_used
        for i in np.flatnonzero(~on):  # no candidate left out could still fit
            free = not busy[c.device[i], c.start[i] : c.upload[i] + 1].any()
            assert not (free and used[c.upload[i]] < ctx.channels), (seed, i)


def planning_setup(seed: int = 3) -> tuple[PlanContext, Physics]:
    """A context with the surrogate's terms and the matching physics, for SCAScheduler."""
    ctx = dataclasses.replace(context(seed), terms=problem(context(seed), 0.0).terms)
    ph = Physics(
        samples=problem(ctx, 0.0, seed=seed).samples,
        train_flops=np.array([3e6, 1e6, 2e4]),
        speed=np.random.default_rng(seed).uniform(0.5e9, 4e9, 8),
        kappa=1e-28,
        upload_j=np.full((8, 3), 0.05),
        comm_s=np.full((8, 3), 0.5),
        round_s=10.0,
    )
    return ctx, ph


def test_the_optimisers_halves_alone():
    ctx, ph = planning_setup(3)
    rr = round_robin(ctx)
    sizing = SCAScheduler(ph, beta_e=0.01, mode="sizing")(ctx)
    assert [(x.device, x.model, x.start, x.upload) for x in sizing.sessions()] == [
        (x.device, x.model, x.start, x.upload) for x in rr.sessions()
    ]
    assert {x.iterations for x in sizing.sessions()} != {ctx.iterations}  # sized by the optimiser
    schedule = SCAScheduler(ph, beta_e=0.01, mode="schedule")(ctx)
    validate(schedule, ctx.has_data, ctx.channels, ctx.available, ctx.busy_until, ctx.channel_used)
    assert schedule.sessions()
    assert {(x.iterations, x.batch) for x in schedule.sessions()} == {(ctx.iterations, ctx.batch)}


def test_added_values_are_the_objective_of_each_addition():
    from fedtempo.alloc.mafl.rounding import added_values

    for seed in range(3):
        ctx = context(seed)
        p = with_dissimilarity(problem(ctx, beta=0.05, seed=seed), 0.5)
        c = candidates(p)
        k = coefficients(p, c, np.full(p.samples.shape, 10), np.full(p.samples.shape, 16))
        s = (np.random.default_rng(seed).random(len(c.device)) < 0.2).astype(float)
        fast = added_values(p, c, s, k)
        for i in range(len(c.device)):
            t = s.copy()
            t[i] += 1.0
            assert fast[i] == pytest.approx(objective(p, c, t, k), rel=1e-12)


def test_a_model_past_its_drift_peak_is_planned_without_error():
    """The schedule half keeps the nominal gamma; where the fitted drift peaks before it, the mean
    session moves the model backwards: the S-step counts it as no progress, and the plan stands."""
    ctx = context(1)
    p = problem(ctx, beta=0.01, seed=1)
    terms = tuple(dataclasses.replace(t, local_steps=1.0, drift_decay=0.5) for t in p.terms)
    p = dataclasses.replace(p, terms=terms)
    assert np.all(
        effective_steps(np.array([10.0]), np.array([16.0]), np.array([500.0]), 1.0, 30.0, 0.5) < 0
    )
    r = plan(p, size=False)
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(r.relaxed))
    assert np.isfinite(r.objective)


def test_a_relative_gap_divides_each_weight_by_the_models_first_loss():
    """mafl.relative_gap: phi_m / G_m (G_m at the first measurement, then fixed), so Psi_m is
    the share of its first loss a model still has; off, the weights stay phi_m."""
    from fedtempo.experiment.build import build
    from fedtempo.sim import Recorder

    terms = {}
    for relative in (False, True):
        config = validate_config(two_tasks("sca", warmup_rounds=1, relative_gap=relative))
        built = build(config, Recorder())
        prober = built.driver.algorithm.measure
        params = {t.task: t.model.params for t in built.tasks}
        first = prober(params, {t.task: None for t in built.tasks})
        g = torch.Generator().manual_seed(0)  # (a constant shift moves every logit alike)
        moved = {m: p + 0.3 * torch.randn(p.shape, generator=g) for m, p in params.items()}
        second = prober(moved, params)
        terms[relative] = (first, second, dict(prober.first_gap))
    (plain1, plain2, _), (rel1, rel2, gaps) = terms[False], terms[True]
    for m in (0, 1):
        assert plain1[m].weight == plain2[m].weight == 1.0
        assert gaps[m] == plain1[m].gap > 0 and rel2[m].gap != rel1[m].gap
        assert rel1[m].weight == rel2[m].weight == pytest.approx(1.0 / gaps[m])
        assert rel1[m].weight * rel1[m].gap == pytest.approx(1.0)
