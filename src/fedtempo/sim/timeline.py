"""One device timeline on the virtual clock: the phases of a ``ClientPlan``, for every algorithm.

A session first checks that the client is available (an offline client's training is never
submitted), submits its training to the executor, then runs its phases in order (``Download``,
``Compute``, ``Exchange``, ``Upload``, ``WaitUntil``). What applies to every algorithm is written
here once:
- failures: with ``failure_probability`` the session loses U(0, 2 x its planned duration) and
  uploads nothing (the AsyncFedED experiments' failure model);
- availability: a ready window that closes before the session is done interrupts it (the work
  is lost; it must finish strictly before the window's end);
- interrupts from the driver (a round deadline: ``late``);
- energy: compute (kappa c B gamma f^2) and transmission (p x seconds) for the time actually
  spent in each phase, including an interrupted one;
- the shared uplink, when the run has one and the plan did not allocate the rate itself.
Compute time of a session is drawn from the stream of (task, dispatch) of its job, so the plan
(``RoundView.compute_time``) and the session see the same draw.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import simpy

from fedtempo.algorithms.jobs import TrainingJob
from fedtempo.algorithms.protocol import (
    ClientPlan,
    ClientResult,
    Compute,
    Download,
    Exchange,
    Phase,
    Upload,
    standard_phases,
)
from fedtempo.client.local import Update
from fedtempo.rng import Streams
from fedtempo.sim.executor import Executor
from fedtempo.sim.recorder import Recorder
from fedtempo.sim.task import SimTask
from fedtempo.sim.uplink import SharedUplink
from fedtempo.system.devices import DeviceModel
from fedtempo.system.failures import failure_delay


@dataclass(frozen=True)
class Runtime:
    """What every session and driver of a simulation shares."""

    env: simpy.Environment
    devices: DeviceModel
    executor: Executor
    recorder: Recorder
    streams: Streams
    uplink: SharedUplink | None = None
    busy: dict[int, simpy.Event] = field(default_factory=dict)  # each device's last session


def compute_draw(task: int, dispatch: int) -> tuple[int, int]:
    """The key of a session's compute-time draw: (task, the client's dispatch number). A plan's
    view and the session use this one key, so they see the same draw."""
    return (task, dispatch)


def _watchdog(
    env: simpy.Environment, session: simpy.Process, delay: float
) -> Generator[Any, Any, None]:
    yield env.timeout(delay)
    if session.is_alive:
        session.interrupt("offline")


@dataclass
class _Meter:
    """The phase in progress (its start and energy rate, for an interrupted phase) and the
    energy of the finished phases."""

    start: float
    watts: float = 0.0
    energy: float = 0.0
    bytes_up: int = 0


def planned_seconds(dev: DeviceModel, plan: ClientPlan, now: float) -> float:
    """The session's duration as planned at ``now`` (what a failure's lost time scales with)."""
    c, draw, total = plan.client, compute_draw(plan.job.task, plan.job.dispatch), 0.0
    for ph in plan.phases:
        if isinstance(ph, Download):
            total += dev.download_time(c, ph.bits, now)
        elif isinstance(ph, Compute):
            total += dev.compute_time(c, ph.flops, now, draw)
        elif isinstance(ph, Exchange):
            one = dev.compute_time(c, ph.flops, now, draw) + dev.upload_time(c, ph.up_bits, now)
            total += ph.repeat * (one + ph.server_s + dev.download_time(c, ph.down_bits, now))
        elif isinstance(ph, Upload):
            rate = ph.rate_bps
            total += ph.bits / rate if rate is not None else dev.upload_time(c, ph.bits, now)
    return total


class _Phases:
    """Runs phases for one session, recording each at its end."""

    def __init__(self, rt: Runtime, job: TrainingJob, meter: _Meter) -> None:
        self.rt, self.job, self.meter = rt, job, meter
        self.draw = compute_draw(job.task, job.dispatch)

    def _record(self, kind: str, nbytes: int, seconds: float, joules: float) -> None:
        j = self.job
        self.rt.recorder.event(
            self.rt.env.now, kind, j.task, j.client, j.base_version, nbytes, seconds, joules
        )

    def download(self, bits: float) -> Generator[Any, Any, None]:
        env, c = self.rt.env, self.job.client
        self.meter.start, self.meter.watts = env.now, 0.0
        t = self.rt.devices.download_time(c, bits, env.now)
        yield env.timeout(t)
        self._record("download", int(bits // 8), t, 0.0)

    def compute(self, flops: float) -> Generator[Any, Any, None]:
        env, dev, c = self.rt.env, self.rt.devices, self.job.client
        t = dev.compute_time(c, flops, env.now, self.draw)
        e = dev.compute_energy(c, flops)
        self.meter.start, self.meter.watts = env.now, (e / t if t > 0 else 0.0)
        yield env.timeout(t)
        self.meter.energy += e
        self._record("compute", 0, t, e)

    def send(self, bits: float, rate_bps: float | None, kind: str) -> Generator[Any, Any, None]:
        env, dev, c, uplink = self.rt.env, self.rt.devices, self.job.client, self.rt.uplink
        self.meter.start, self.meter.watts = env.now, dev.upload_energy(c, 1.0)
        if rate_bps is not None:
            t = bits / rate_bps
            yield env.timeout(t)
        elif uplink is not None and kind == "upload":
            t = yield uplink.transfer(c, bits)
        else:
            t = dev.upload_time(c, bits, env.now)
            yield env.timeout(t)
        e = dev.upload_energy(c, t)
        self.meter.energy += e
        if kind == "upload":
            self.meter.bytes_up += int(bits // 8)
        self._record(kind, int(bits // 8), t, e)

    def exchange(self, ph: Exchange) -> Generator[Any, Any, None]:
        env, c = self.rt.env, self.job.client
        for _ in range(ph.repeat):
            yield from self.compute(ph.flops)
            yield from self.send(ph.up_bits, None, "smashed")
            self.meter.start, self.meter.watts = env.now, 0.0
            yield env.timeout(ph.server_s)
            yield env.timeout(self.rt.devices.download_time(c, ph.down_bits, env.now))

    def run(self, ph: Phase) -> Generator[Any, Any, None]:
        if isinstance(ph, Download):
            yield from self.download(ph.bits)
        elif isinstance(ph, Compute):
            yield from self.compute(ph.flops)
        elif isinstance(ph, Exchange):
            yield from self.exchange(ph)
        elif isinstance(ph, Upload):
            yield from self.send(ph.bits, ph.rate_bps, "upload")
        elif ph.time > self.rt.env.now:
            self.meter.start, self.meter.watts = self.rt.env.now, 0.0
            yield self.rt.env.timeout(ph.time - self.rt.env.now)


def timeline(rt: Runtime, plan: ClientPlan) -> Generator[Any, Any, ClientResult | None]:
    """The session process of ``plan``; its result (the update with bytes and energy filled
    in, the session's seconds and its end), or None when it failed, went offline or was
    interrupted. A device runs one session at a time: a session planned while the device's
    previous one still runs starts when that one ends (MA-FL's overrunning sessions)."""
    env, c = rt.env, plan.client
    previous, mine = rt.busy.get(c), env.event()
    rt.busy[c] = mine
    try:
        if previous is not None and not previous.triggered:
            try:
                yield previous
            except simpy.Interrupt:  # the driver gave up on it before it could start
                job = plan.job
                rt.recorder.event(env.now, "late", job.task, c, job.base_version)
                return None
        return (yield from _session(rt, plan))
    finally:
        mine.succeed()
        if rt.busy.get(c) is mine:
            del rt.busy[c]


def _session(rt: Runtime, plan: ClientPlan) -> Generator[Any, Any, ClientResult | None]:
    env, dev, rec, job = rt.env, rt.devices, rt.recorder, plan.job
    c, task, version, begin = job.client, job.task, job.base_version, env.now
    rec.event(env.now, "dispatch", task, c, version)
    end = dev.availability.window_end(c, env.now)
    if end is None:
        rec.event(env.now, "offline", task, c, version)
        return None
    handle = rt.executor.submit(job)
    if math.isfinite(end):
        env.process(_watchdog(env, env.active_process, end - env.now))  # type: ignore[arg-type]
    meter = _Meter(env.now)
    try:
        if dev.failure_probability > 0:
            rng = rt.streams.numpy("failure", task, c, job.dispatch)
            lost = failure_delay(rng, dev.failure_probability, planned_seconds(dev, plan, env.now))
            if lost is not None:
                handle.cancel()
                yield env.timeout(lost)
                rec.event(env.now, "fail", task, c, version, 0, lost)
                return None
        phases = _Phases(rt, job, meter)
        for ph in plan.phases:
            yield from phases.run(ph)
    except simpy.Interrupt as interrupt:
        handle.cancel()
        if rt.uplink is not None:
            rt.uplink.cancel(c)
        partial = meter.watts * (env.now - meter.start)
        kind = "offline" if interrupt.cause == "offline" else "late"
        rec.event(env.now, kind, task, c, version, 0, env.now - meter.start, partial)
        return None
    update = handle.result()
    done = dataclasses.replace(update, bytes_sent=meter.bytes_up, energy_j=meter.energy)
    return ClientResult(done, env.now - begin, env.now)


def session(rt: Runtime, task: SimTask, job: TrainingJob) -> Generator[Any, Any, Update | None]:
    """A FedAvg-style session (download, train, upload) of ``job``; its update or None."""
    bits, flops = float(task.profile.size_bits), task.compute_flops(job.client, job.epochs)
    result = yield from timeline(rt, ClientPlan(job, standard_phases(bits, flops)))
    return None if result is None else result.update
