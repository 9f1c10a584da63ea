"""The virtual-clock driver (SimPy): one device timeline, the round and asynchronous drivers,
executors for client training, the recorder, the multi-job aggregation service."""

from fedtempo.sim.engine import SimResult, Simulation
from fedtempo.sim.executor import Executor, InlineExecutor, TrainingJob
from fedtempo.sim.recorder import Evaluation, Event, Recorder
from fedtempo.sim.rounds import RoundDriver
from fedtempo.sim.task import GlobalModel, SimTask
from fedtempo.sim.timeline import Runtime, session, timeline
from fedtempo.sim.uplink import SharedUplink

__all__ = [
    "Evaluation",
    "Event",
    "Executor",
    "GlobalModel",
    "InlineExecutor",
    "Recorder",
    "RoundDriver",
    "Runtime",
    "SharedUplink",
    "SimResult",
    "SimTask",
    "Simulation",
    "TrainingJob",
    "session",
    "timeline",
]
