"""The control core: events, arbitration, curves, state-of-charge limits and setpoints.

Nothing in this package does I/O, reads a clock or imports asyncio: given the events, the
device states and the time, `Controller` decides the setpoints and the responses (see
docs/architecture.md: functional core). The runtime's control loop is its only caller.
"""

from derms_edge.control.arbitration import InForce, Source, SourceKind
from derms_edge.control.controller import SITE, Controller, Decision
from derms_edge.control.export_limit import ExportLimiter
from derms_edge.control.lifecycle import OPEN, TERMINAL, Record
from derms_edge.control.views import DeviceView, Role

__all__ = [
    "OPEN",
    "SITE",
    "TERMINAL",
    "Controller",
    "Decision",
    "DeviceView",
    "ExportLimiter",
    "InForce",
    "Record",
    "Role",
    "Source",
    "SourceKind",
]
