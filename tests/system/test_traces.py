import json
from pathlib import Path

import numpy as np
import pytest

from fedtempo.errors import DataError
from fedtempo.system import traces

TRACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces"
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/data/traces not present")


def test_throughput_good_file(tmp_path: Path) -> None:
    p = tmp_path / "t.log"
    p.write_text("# comment\n0.0 1.5\n\n1.0\t2.5\n2.5 0\n")
    t, r = traces.read_throughput(p)
    assert list(t) == [0.0, 1.0, 2.5] and list(r) == [1.5, 2.5, 0.0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("0 1\n1 x\n", r"t\.log:2: expected two numbers"),
        ("0 1\n1 2 3\n", r"t\.log:2: expected two numbers"),
        ("0 1 2\n3\n", r"t\.log:1: expected two numbers"),  # as many numbers, mispaired
        ("0 1\n1 nan\n", r"t\.log:2: bad values"),
        ("0 1\n1 -2\n", r"t\.log:2: bad values"),
        ("0 1\n2 1\n1 1\n", r"t\.log:3: time 1\.0 goes back"),
        ("", r"t\.log: empty trace"),
        ("# only a comment\n", r"t\.log: empty trace"),
        ("0 0\n1 0\n", r"t\.log: all throughputs are zero"),
    ],
)
def test_throughput_bad_files(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "t.log"
    p.write_text(content)
    with pytest.raises(DataError, match=message):
        traces.read_throughput(p)


def test_a_clean_trace_is_read_at_once_exactly_as_line_by_line(tmp_path: Path) -> None:
    p = tmp_path / "t.log"
    rng = np.random.default_rng(0)
    t, r = np.cumsum(rng.uniform(0, 2, 500)), rng.uniform(0, 30, 500)
    p.write_text("".join(f"{float(a)!r}\t{float(b)!r}\n\n" for a, b in zip(t, r, strict=True)))
    fast = traces._parse_clean(p.read_text())
    assert fast is not None  # the whole-file path took it
    slow = traces._parse_lines(p, p.read_text())
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    assert np.array_equal(fast[0], t) and np.array_equal(fast[1], r)


def test_trace_folder_skips_licence(tmp_path: Path) -> None:
    (tmp_path / "LICENSE").write_text("MIT")
    (tmp_path / "b.log").write_text("0 1\n")
    (tmp_path / "a.log").write_text("0 1\n")
    assert [p.name for p in traces.trace_files(tmp_path)] == ["a.log", "b.log"]
    with pytest.raises(DataError, match="not a directory"):
        traces.trace_files(tmp_path / "a.log")


def test_latency_and_benchmark_records(tmp_path: Path) -> None:
    p = tmp_path / "lat.json"
    p.write_text(
        json.dumps(
            [
                {"Phone Model": "a", "ResNet Latency": 50.0, "ResNet STD": 2.0},
                {"Phone Model": "b", "ResNet Latency": 0.0, "ResNet STD": 0},  # not measured
                {"Phone Model": "c", "ResNet Latency": 100.0, "ResNet STD": 5.0},
            ]
        )
    )
    lat = traces.read_training_latency(p)
    assert list(lat.mean_ms) == [50.0, 100.0] and lat.skipped == 1 and lat.total == 3
    p.write_text(json.dumps([{"ResNet Latency": "fast", "ResNet STD": 1}]))
    with pytest.raises(DataError, match=r"lat\.json: entry 0: field 'ResNet Latency' is not"):
        traces.read_training_latency(p)
    p.write_text("[1, 2")
    with pytest.raises(DataError, match=r"lat\.json: cannot read JSON"):
        traces.read_training_latency(p)
    b = tmp_path / "ai.json"
    b.write_text(json.dumps([{"CPU_F_AI_Score": "1,200"}, {"CPU_F_AI_Score": "800"}]))
    assert list(traces.read_ai_benchmark(b)) == [1200.0, 800.0]
    b.write_text(json.dumps([{"Model": "x"}]))
    with pytest.raises(DataError, match="entry 0: missing 'CPU_F_AI_Score'"):
        traces.read_ai_benchmark(b)


def test_flash_records(tmp_path: Path) -> None:
    p = tmp_path / "flash.json"
    p.write_text(
        json.dumps(
            {
                "2": {
                    "isSuccess": True,
                    "trace_start": 100,
                    "trace_end": 500,
                    "ready_time": [[300, 310], [150, 160], [155, 170], [200, 200]],
                },
                "1": {
                    "isSuccess": False,
                    "trace_start": 0,
                    "trace_end": 10,
                    "ready_time": [[1, 2]],
                },
                "10": {
                    "isSuccess": True,
                    "trace_start": 0,
                    "trace_end": 50,
                    "ready_time": [[5, 9]],
                },
            }
        )
    )
    loaded = traces.read_flash(p)
    assert len(loaded) == 2  # client 1 failed
    iv, span = loaded[0]  # client "2" (ids sorted numerically: 2 before 10)
    assert iv.tolist() == [[50.0, 70.0], [200.0, 210.0]]  # merged, empty dropped, shifted
    assert span == 400.0
    p.write_text(json.dumps({"1": {"trace_start": 0, "ready_time": [[5, 1]]}}))
    with pytest.raises(DataError, match="client 1: an interval ends before it starts"):
        traces.read_flash(p)


@needs_traces
def test_real_traces_parse() -> None:
    fcc = traces.trace_files(TRACES / "bandwidth" / "fcc")
    assert len(fcc) == 127
    t, r = traces.read_throughput(fcc[0])
    assert len(t) > 10 and r.max() > 0
    assert len(traces.trace_files(TRACES / "bandwidth" / "hsdpa_3g")) == 80
    lat = traces.read_training_latency(TRACES / "devices" / "training_latency.json")
    assert lat.total == 997 and lat.skipped == 19
    assert len(traces.read_ai_benchmark(TRACES / "devices" / "ai_benchmark.json")) == 333
    flash = traces.read_flash(TRACES / "availability" / "flash_ready_times.json")
    assert 600 < len(flash) < 1000
    assert all(np.all(iv[:, 1] > iv[:, 0]) for iv, _ in flash)
