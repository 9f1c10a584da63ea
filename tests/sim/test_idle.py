"""IdleSet reads as the sorted list of idle ids it replaces (the dispatch rules index and bisect
it), under any sequence of adds and removes."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from fedtempo.sim.idle import IdleSet


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 70), st.data())
def test_idle_set_is_a_sorted_list(size: int, data: st.DataObject) -> None:
    start = sorted(data.draw(st.sets(st.integers(0, size - 1))))
    idle, model = IdleSet(start, size), list(start)
    for _ in range(data.draw(st.integers(0, 60))):
        c = data.draw(st.integers(0, size - 1))
        if c in model:
            idle.remove(c)
            del model[bisect.bisect_left(model, c)]
        else:
            idle.add(c)
            bisect.insort(model, c)
        assert len(idle) == len(model) and list(idle) == model
        assert [idle[i] for i in range(len(model))] == model
        assert idle[1:-1] == model[1:-1] and idle[::2] == model[::2]
        if model:
            assert idle[-1] == model[-1]
        probe = data.draw(st.integers(0, size))
        assert bisect.bisect_left(idle, probe) == bisect.bisect_left(model, probe)
        assert (probe in idle) == (probe in model)


def test_idle_set_refuses_what_is_not_so() -> None:
    import pytest

    idle = IdleSet([1, 3], 5)
    with pytest.raises(ValueError, match="idle already"):
        idle.add(3)
    with pytest.raises(ValueError, match="not idle"):
        idle.remove(2)
    with pytest.raises(IndexError):
        idle[2]
    with pytest.raises(ValueError, match="outside"):
        IdleSet([5], 5)
