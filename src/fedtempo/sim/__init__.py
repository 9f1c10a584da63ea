"""The virtual-clock engine (SimPy), executors for client training, servers, the recorder."""

from fedtempo.sim.engine import SimResult, Simulation
from fedtempo.sim.executor import Executor, InlineExecutor, TrainingJob
from fedtempo.sim.recorder import Evaluation, Event, Recorder
from fedtempo.sim.session import Runtime, session
from fedtempo.sim.sync import SyncServer
from fedtempo.sim.task import GlobalModel, SimTask
from fedtempo.sim.uplink import SharedUplink

__all__ = [
    "Evaluation",
    "Event",
    "Executor",
    "GlobalModel",
    "InlineExecutor",
    "Recorder",
    "Runtime",
    "SharedUplink",
    "SimResult",
    "SimTask",
    "Simulation",
    "SyncServer",
    "TrainingJob",
    "session",
]
