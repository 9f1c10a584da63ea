import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtempo.rng import Streams
from fedtempo.system import (
    ThroughputTrace,
    TraceLink,
    WirelessLink,
    computation_energy,
    path_loss_db,
    shannon_rate,
    transmission_energy,
)
from fedtempo.system.links import dbm_to_watt

# Segments: [0,1) 1 Mbit/s, [1,2) 2 Mbit/s, [2,3) 0 Mbit/s (the last lasts as long as the one
# before); period 3 s, 3 Mbit per period.
TRACE = ThroughputTrace.from_samples(np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 0.0]))


def test_transfer_over_several_segments_by_hand() -> None:
    assert TRACE.period == 3.0 and TRACE.mean_bps == 1e6
    # from 0.5: 0.5 Mbit by t=1, then 2 Mbit by t=2 -> 2.5 Mbit in 1.5 s
    assert TRACE.transfer_time(2.5e6, 0.5) == pytest.approx(1.5)
    # 4 Mbit from 0.5: 2.5 by t=2, nothing until 3, 1 more by 4, 0.5 at 2 Mbit/s -> t = 4.25
    assert TRACE.transfer_time(4e6, 0.5) == pytest.approx(3.75)
    # starting inside the dead segment waits for the wrap-around
    assert TRACE.transfer_time(1e6, 2.5) == pytest.approx(1.5)
    # exactly one period's worth from 0 ends when the last bit is sent (t = 2)
    assert TRACE.transfer_time(3e6, 0.0) == pytest.approx(2.0)
    # many periods later: start time wraps
    assert TRACE.transfer_time(2.5e6, 30.5) == pytest.approx(1.5)
    assert TRACE.transfer_time(0.0, 1.0) == 0.0


@given(st.floats(0, 50), st.floats(1e3, 2e7), st.floats(1e3, 2e7))
@settings(max_examples=200)
def test_consecutive_transfers_add_up(start: float, a: float, b: float) -> None:
    ta = TRACE.transfer_time(a, start)
    tb = TRACE.transfer_time(b, start + ta)
    assert ta + tb == pytest.approx(TRACE.transfer_time(a + b, start), rel=1e-9, abs=1e-9)


def test_trace_link_offsets_and_scale() -> None:
    link = TraceLink([TRACE], np.array([0, 0]), np.array([0.0, 1.0]), scale=2.0)
    assert link.transfer_time(0, 1e6, 0.0) == pytest.approx(0.5)  # 1 Mbit at 2 Mbit/s
    assert link.transfer_time(1, 1e6, 0.0) == pytest.approx(0.25)  # starts in the 2 Mbit/s seg
    assert link.rate_bps(1, 0.0, share=0.5) == pytest.approx(2e6)
    assert link.mean_rate_bps(0) == pytest.approx(2e6)


def test_path_loss_and_shannon_rate_by_hand() -> None:
    assert path_loss_db(1.0) == pytest.approx(128.1)
    assert path_loss_db(0.2) == pytest.approx(128.1 + 37.6 * math.log10(0.2))
    n0 = dbm_to_watt(-174.0)
    assert n0 == pytest.approx(3.981e-21, rel=1e-3)
    gain = 10 ** (-path_loss_db(0.2) / 10)
    snr = 0.2 * gain / (n0 * 1e6)
    assert shannon_rate(1e6, 0.2, gain, n0) == pytest.approx(1e6 * math.log2(1 + snr))
    assert shannon_rate(1e6, 0.2, gain, n0) == pytest.approx(11.69e6, rel=1e-3)
    assert shannon_rate(0.0, 0.2, gain, n0) == 0.0


def test_energy_formulas_by_hand() -> None:
    # (alpha/2) c B gamma f^2: 1e-28 x 1e9 FLOPs x (2e9 /s)^2 = 0.4 J
    assert computation_energy(1e-28, 1e9, 2e9) == pytest.approx(0.4)
    assert transmission_energy(0.2, 3.0) == pytest.approx(0.6)


def test_wireless_channel_is_seeded_and_redrawn_per_block() -> None:
    make = lambda seed: WirelessLink(np.array([200.0, 400.0]), 0.2, 1e6, Streams(seed))  # noqa: E731
    a, b = make(0), make(0)
    assert a.rate_bps(0, 3.0) == b.rate_bps(0, 3.0)
    assert a.rate_bps(0, 3.0) == a.rate_bps(0, 9.9)  # same 10 s coherence block
    assert a.rate_bps(0, 3.0) != a.rate_bps(0, 10.0)  # next block
    assert make(1).rate_bps(0, 3.0) != a.rate_bps(0, 3.0)
    # farther devices are slower on average
    assert a.mean_rate_bps(0) > a.mean_rate_bps(1)
    # half the bandwidth gives less than the full rate but more than half of it
    full, half = a.rate_bps(0, 0.0), a.rate_bps(0, 0.0, share=0.5)
    assert full / 2 < half < full
