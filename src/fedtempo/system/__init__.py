"""Device profiles, compute and link durations."""

from fedtempo.system.devices import (
    DeviceModel,
    DeviceProfile,
    LogNormal,
    StaticDevices,
    draw_profiles,
)

__all__ = ["DeviceModel", "DeviceProfile", "LogNormal", "StaticDevices", "draw_profiles"]
