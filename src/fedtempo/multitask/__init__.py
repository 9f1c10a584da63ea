"""Several models at once (MA-FL): scheduling tensors, their constraints and the schedulers."""

from fedtempo.multitask.optimised import Physics, PlanRecord, SCAScheduler
from fedtempo.multitask.schedule import Schedule, ScheduleError, Session, empty_schedule, validate
from fedtempo.multitask.schedulers import (
    PlanContext,
    async_random,
    costly_devices,
    round_robin,
)

__all__ = [
    "Physics",
    "PlanContext",
    "PlanRecord",
    "SCAScheduler",
    "Schedule",
    "ScheduleError",
    "Session",
    "async_random",
    "costly_devices",
    "empty_schedule",
    "round_robin",
    "validate",
]
