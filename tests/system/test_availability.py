import math

import numpy as np
import pytest

from fedtempo.system import AlwaysOn, IntervalAvailability, failure_delay

# One trace: ready [10, 20) and [50, 60), period 100; client 0 at offset 0, client 1 at 15.
AV = IntervalAvailability(
    [np.array([[10.0, 20.0], [50.0, 60.0]])],
    np.array([0, 0]),
    np.array([0.0, 15.0]),
    np.array([100.0]),
)


def test_interval_availability() -> None:
    assert AV.window_end(0, 5.0) is None
    assert AV.window_end(0, 10.0) == 20.0
    assert AV.window_end(0, 20.0) is None  # windows are half-open
    assert AV.next_start(0, 5.0) == 10.0
    assert AV.next_start(0, 25.0) == 50.0
    assert AV.next_start(0, 65.0) == 110.0  # wraps to the next period
    assert AV.window_end(0, 115.0) == 120.0
    assert AV.window_end(1, 0.0) == 5.0  # client 1 starts inside [10, 20) at trace time 15
    assert AV.fraction(0, 100.0) == pytest.approx(0.2)
    assert AV.fraction(0, 15.0) == pytest.approx(5 / 15)


def test_always_on() -> None:
    assert AlwaysOn().window_end(3, 1e9) == math.inf
    assert AlwaysOn().fraction(0, 10.0) == 1.0


def test_failure_draws() -> None:
    rng = np.random.default_rng(0)
    delays = [failure_delay(rng, 1.0, 5.0) for _ in range(2000)]
    assert all(d is not None and 0 <= d <= 10.0 for d in delays)
    assert np.mean([d for d in delays if d is not None]) == pytest.approx(5.0, rel=0.05)
    assert failure_delay(np.random.default_rng(0), 0.0, 5.0) is None
