"""The virtual-clock engine (SimPy), executors for client training, servers, the recorder."""

from fedtempo.sim.engine import SimResult, Simulation
from fedtempo.sim.executor import Executor, InlineExecutor, TrainingJob
from fedtempo.sim.recorder import Evaluation, Event, Recorder
from fedtempo.sim.sync import SyncServer, client_session
from fedtempo.sim.task import GlobalModel, SimTask

__all__ = [
    "Evaluation",
    "Event",
    "Executor",
    "GlobalModel",
    "InlineExecutor",
    "Recorder",
    "SimResult",
    "SimTask",
    "Simulation",
    "SyncServer",
    "TrainingJob",
    "client_session",
]
