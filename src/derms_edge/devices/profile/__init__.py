"""Devices described by a register profile (EV chargers): a sans-I/O codec and the driver."""

from derms_edge.devices.profile.driver import HeldLimit, ProfileDriver

__all__ = ["HeldLimit", "ProfileDriver"]
