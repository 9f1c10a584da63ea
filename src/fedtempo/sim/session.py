"""One client session on the virtual clock: download -> train -> upload.

A session ends without an update when it fails (failure injection: the client loses
U(0, 2 x its round time) and uploads nothing), when its ready window closes before it is done
(availability: the work is lost; it must finish strictly before the window's end), or when the
server interrupts it (a round deadline). Energy is counted for the time actually spent in each
phase, including an interrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import simpy

from fedtempo.client.local import Update
from fedtempo.rng import Streams
from fedtempo.sim.executor import Executor, TrainingJob
from fedtempo.sim.recorder import Recorder
from fedtempo.sim.task import SimTask
from fedtempo.sim.uplink import SharedUplink
from fedtempo.system.devices import DeviceModel
from fedtempo.system.failures import failure_delay


@dataclass(frozen=True)
class Runtime:
    """What every session and server of a simulation shares."""

    env: simpy.Environment
    devices: DeviceModel
    executor: Executor
    recorder: Recorder
    streams: Streams
    uplink: SharedUplink | None = None


def _watchdog(env: simpy.Environment, session: simpy.Process, delay: float) -> Generator:
    yield env.timeout(delay)
    if session.is_alive:
        session.interrupt("offline")


@dataclass
class _Phase:
    start: float = 0.0
    watts: float = 0.0  # energy rate of the phase in progress


def session(rt: Runtime, task: SimTask, job: TrainingJob) -> Generator[Any, Any, Update | None]:
    """The session process; returns the update (with bytes and energy filled in) or None."""
    env, dev, rec = rt.env, rt.devices, rt.recorder
    c, version = job.client, job.base_version
    handle = rt.executor.submit(job)
    bits, flops = task.profile.size_bits, task.compute_flops(c, job.epochs)
    rec.event(env.now, "dispatch", task.task, c, version)
    end = dev.availability.window_end(c, env.now)
    if end is None:
        rec.event(env.now, "offline", task.task, c, version)
        return None
    if math.isfinite(end):
        env.process(_watchdog(env, env.active_process, end - env.now))  # type: ignore[arg-type]
    energy, phase = 0.0, _Phase(env.now)
    try:
        lost = None
        if dev.failure_probability > 0:  # the failure's lost time scales with the round time
            round_time = (
                dev.download_time(c, bits, env.now)
                + dev.compute_time(c, flops, env.now)
                + dev.upload_time(c, bits, env.now)
            )
            rng = rt.streams.numpy("failure", task.task, c, job.dispatch)
            lost = failure_delay(rng, dev.failure_probability, round_time)
        if lost is not None:
            yield env.timeout(lost)
            rec.event(env.now, "fail", task.task, c, version, 0, lost)
            return None
        t = dev.download_time(c, bits, env.now)
        yield env.timeout(t)
        rec.event(env.now, "download", task.task, c, version, bits // 8, t)
        t = dev.compute_time(c, flops, env.now)
        e = dev.compute_energy(c, flops)
        phase = _Phase(env.now, e / t if t > 0 else 0.0)
        yield env.timeout(t)
        energy += e
        rec.event(env.now, "compute", task.task, c, version, 0, t, e)
        phase = _Phase(env.now, dev.upload_energy(c, 1.0))
        if rt.uplink is not None:
            t = yield rt.uplink.transfer(c, bits)
        else:
            t = dev.upload_time(c, bits, env.now)
            yield env.timeout(t)
        e = dev.upload_energy(c, t)
        energy += e
    except simpy.Interrupt as interrupt:
        if rt.uplink is not None:
            rt.uplink.cancel(c)
        partial = phase.watts * (env.now - phase.start)
        kind = "offline" if interrupt.cause == "offline" else "late"
        rec.event(env.now, kind, task.task, c, version, 0, env.now - phase.start, partial)
        return None
    update = handle.result()
    rec.event(env.now, "upload", task.task, c, version, bits // 8, t, e)
    return dataclasses.replace(update, bytes_sent=bits // 8, energy_j=energy)
