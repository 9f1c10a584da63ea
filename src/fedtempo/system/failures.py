"""Client failures as injected in the AsyncFedED experiments (SPEC section 0)."""

from __future__ import annotations

import numpy as np


def failure_delay(rng: np.random.Generator, probability: float, round_time: float) -> float | None:
    """With probability ``probability`` the session fails: returns the time U(0, 2 round_time)
    the client loses before it can start again (it uploads nothing); otherwise None.

    Always draws two numbers, so the stream's position does not depend on the outcome.
    """
    u, v = rng.random(2)
    if u < probability:
        return float(v * 2.0 * round_time)
    return None
