"""The run loop: one SimPy environment, the servers of every task, the periodic evaluator."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import simpy
import torch

from fedtempo.sim.clock import after_instant
from fedtempo.sim.executor import Executor
from fedtempo.sim.recorder import Recorder
from fedtempo.sim.task import SimTask

ServerFactory = Callable[[simpy.Environment, SimTask], Generator[Any, Any, None]]


@dataclass(frozen=True)
class SimResult:
    """Everything a run produced: the recorder's logs and each task's final global vector."""

    recorder: Recorder
    final_params: dict[int, torch.Tensor]
    virtual_time: float


class Simulation:
    """Runs every task's server process (or one joint server for all tasks) until all finish or
    ``time_limit`` (virtual seconds).

    ``eval_interval`` > 0 evaluates every task's global model each that many virtual seconds
    (after all other events of that instant); a final evaluation is always made at the end.
    An evaluation of an unchanged model version reuses the previous metrics. ``on_finish``, if
    set, is called when the clock has stopped, before that final evaluation (which leaves a
    core to spare: a driver's own work can overlap it).
    """

    def __init__(
        self,
        tasks: Sequence[SimTask],
        servers: Sequence[ServerFactory],
        executor: Executor,
        recorder: Recorder,
        *,
        eval_interval: float = 0.0,
        time_limit: float | None = None,
        env: simpy.Environment | None = None,
    ) -> None:
        if len(servers) not in (1, len(tasks)):
            raise ValueError("one server per task, or one joint server for every task")
        self.env = env if env is not None else simpy.Environment()
        self.tasks = list(tasks)
        self.servers = list(servers)
        self.executor = executor
        self.recorder = recorder
        self.eval_interval = eval_interval
        self.time_limit = time_limit
        self._last_eval: dict[int, tuple[int, float, float]] = {}
        self.on_finish: Callable[[], object] | None = None

    def evaluate_all(self) -> None:
        for task in self.tasks:
            version = task.model.version
            cached = self._last_eval.get(task.task)
            if cached is not None and cached[0] == version:
                acc, loss = cached[1], cached[2]
            else:
                self.executor.flush()  # the workers train while this thread evaluates
                acc, loss = self.executor.evaluate(task.task, task.evaluate, task.model.params)
                self._last_eval[task.task] = (version, acc, loss)
            self.recorder.evaluation(
                self.env.now, task.task, version, task.model.updates_applied, acc, loss
            )

    def _evaluator(self) -> Generator[Any, Any, None]:
        while True:
            self.evaluate_all()
            yield after_instant(self.env, self.eval_interval)

    def run(self) -> SimResult:
        env = self.env
        # one joint server (MA-FL) drives every task; it is handed the first
        done = [env.process(f(env, t)) for f, t in zip(self.servers, self.tasks, strict=False)]
        if self.eval_interval > 0:
            env.process(self._evaluator())
        until: simpy.Event = env.all_of(done)
        if self.time_limit is not None:
            until = until | after_instant(env, self.time_limit)
        try:
            env.run(until=until)
            # what still waits to train will never be consumed: the last evaluation comes first
            self.executor.stop_training()
            if self.on_finish is not None:
                self.on_finish()
            if (
                self.eval_interval <= 0
                or not self.recorder.evaluations
                or (self.recorder.evaluations[-1].time < env.now)
            ):
                self.evaluate_all()
        finally:
            self.executor.close()
        return SimResult(
            self.recorder, {t.task: t.model.params.clone() for t in self.tasks}, float(env.now)
        )
