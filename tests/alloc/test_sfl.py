"""SFL cut selection and server compute allocation (SPEC D): closed form, alternating, exact
bisection and exhaustive search, baselines, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtempo.alloc import sfl
from fedtempo.errors import ConfigError

# A 5-cut profile shaped like effnetv2-tiny's: FLOPs grow with the cut, activations shrink.
CLIENT_FLOPS = np.array([0.5e6, 11e6, 25e6, 46e6, 86e6])
SMASHED = np.array([4e5, 4e5, 2e5, 7.5e4, 0.0])
CLIENT_BITS = np.array([6e3, 8e4, 4.5e5, 9e5, 2e6])


def _problem(n: int, seed: int, server_factor: float = 20.0, rate: float = 1e8) -> sfl.SflProblem:
    rng = np.random.default_rng(seed)
    speed = rng.lognormal(np.log(2e9), 0.8, n)
    up = rng.lognormal(np.log(rate), 1.0, n)
    return sfl.SflProblem(
        client_flops=CLIENT_FLOPS,
        server_flops=CLIENT_FLOPS[-1] - CLIENT_FLOPS,
        smashed_bits=SMASHED,
        client_bits=CLIENT_BITS,
        speed=speed,
        up=up,
        down=3 * up,
        iterations=np.full(n, 20.0),
        batch=np.full(n, 32.0),
        server_speed=server_factor * float(np.median(speed)),
    )


def test_the_closed_form_shares_equalise_the_servers_users() -> None:
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 1.0, 2.0, 0.0])
    shares, tau = sfl.share_server(a, b)
    assert shares.sum() == pytest.approx(1.0) and shares[3] == 0.0
    t = a[:3] + b[:3] / shares[:3]
    assert np.allclose(t, tau, rtol=1e-12) and tau > 4.0
    # A plain client slower than that sets the round: the users' latencies stay equalised.
    assert sfl.share_server(np.array([1.0, 2.0, 3.0, 20.0]), b)[1] == 20.0
    # Any other split of the server is worse for the slowest user.
    other = np.array([0.5, 0.25, 0.25])
    assert np.max(a[:3] + b[:3] / other) > tau
    # Nobody uses the server: the latency is the slowest plain client.
    assert sfl.share_server(np.array([1.0, 5.0]), np.zeros(2)) == (pytest.approx([0, 0]), 5.0)


def test_latency_model_matches_spec_d() -> None:
    p = _problem(3, 0)
    cuts, shares = np.array([1, 3, 5]), np.array([0.5, 0.5, 0.0])
    t = sfl.latencies(p, cuts, shares)
    for n, (cut, phi) in enumerate(zip(cuts, shares, strict=True)):
        i = cut - 1
        kb = p.iterations[n] * p.batch[n]
        expected = kb * (
            CLIENT_FLOPS[i] / p.speed[n] + SMASHED[i] / p.up[n] + SMASHED[i] / p.down[n]
        )
        expected += CLIENT_BITS[i] / p.up[n] + CLIENT_BITS[i] / p.down[n]
        if p.server_flops[i] > 0:
            expected += kb * p.server_flops[i] / (phi * p.server_speed)
        assert t[n] == pytest.approx(expected, rel=1e-12)


@given(st.integers(2, 5), st.integers(0, 10_000), st.floats(0.5, 50), st.floats(1e6, 1e9))
@settings(max_examples=25, deadline=None)
def test_bisection_optimum_equals_exhaustive_search(
    n: int, seed: int, f: float, rate: float
) -> None:
    p = _problem(n, seed, f, rate)
    ex, opt, alt = sfl.exhaustive(p), sfl.optimal(p), sfl.alternating(p)
    assert opt.round_latency == pytest.approx(ex.round_latency, rel=1e-9)
    assert alt.round_latency >= ex.round_latency * (1 - 1e-9)
    # The alternating iterations never increase the latency and start from equal shares.
    assert all(b <= a for a, b in zip(alt.history, alt.history[1:], strict=False))
    assert alt.round_latency <= sfl.equal_shares(p).round_latency * (1 + 1e-12)
    for base in (
        sfl.plain_fl(p),
        sfl.fixed_cut(p, 2),
        sfl.random_cuts(p, np.random.default_rng(0)),
    ):
        assert opt.round_latency <= base.round_latency * (1 + 1e-9)
    assert opt.shares.sum() <= 1 + 1e-9


def test_the_server_decides_who_splits() -> None:
    # A tiny server: splitting only adds work, everyone trains alone.
    slow = sfl.optimal(_problem(4, 1, server_factor=1e-3))
    assert np.all(slow.cuts == 5) and np.all(slow.shares == 0)
    # Slow devices, fast links, a huge server: everyone keeps only the first block.
    fast = sfl.optimal(_problem(4, 1, server_factor=1e4, rate=1e11))
    assert np.all(fast.cuts == 1)
    assert fast.round_latency < 0.3 * sfl.plain_fl(_problem(4, 1, 1e4, 1e11)).round_latency


def test_bad_input_is_named() -> None:
    p = _problem(3, 0)
    with pytest.raises(ConfigError, match="client 1: cut 9 is not a legal cut"):
        sfl.latencies(p, np.array([1, 9, 2]), np.full(3, 0.3))
    with pytest.raises(ConfigError, match="sum to at most 1"):
        sfl.latencies(p, np.array([1, 1, 1]), np.full(3, 0.5))
    with pytest.raises(ConfigError, match="server compute must be > 0"):
        sfl.SflProblem(**{**vars(p), "server_speed": 0.0})
    with pytest.raises(ConfigError, match="client 2: speed must be > 0"):
        sfl.SflProblem(**{**vars(p), "speed": np.array([1e9, 1e9, 0.0])})
    with pytest.raises(ConfigError, match="over the limit"):
        sfl.exhaustive(_problem(12, 0))
