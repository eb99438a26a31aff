"""One exception tree for the gateway.

    GatewayError
    ├── ConfigError                  the configuration file is invalid (carries every problem)
    ├── PointError                   a SunSpec point write we were asked to encode is invalid (ours)
    ├── RegisterValueError           a register-profile write cannot hold its value (ours)
    ├── ControlRefused               a device refused a setpoint or did not read it back
    ├── LifecycleError               an event status change the lifecycle has not (a bug)
    ├── Unconvertible                an outbox row that cannot become an InfluxDB point
    └── DeviceError                  something about one device
        ├── TransportError           we could not talk to it (retryable)
        │   ├── DeviceTimeout
        │   └── ConnectionLost
        ├── DeviceProtocolError      it answered, but not as the protocol says (marker, lengths)
        ├── DeviceException          it answered with a Modbus exception code
        └── DeviceChanged            it is no longer as discovered (moved its models, forgot
                                     the setpoints written to it): it restarted

Driver code maps library exceptions (pymodbus, asyncua) onto this tree at the boundary,
chaining the original with ``from exc``; nothing above the drivers catches library types.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; ``problems`` holds one readable line per error."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DeviceError(GatewayError):
    """Base of every error about one device."""

    retryable: bool = True


class TransportError(DeviceError):
    """The device could not be reached or the link broke."""


class DeviceTimeout(TransportError):
    """The device did not answer in time."""


class ConnectionLost(TransportError):
    """The connection was refused or closed."""


class DeviceProtocolError(DeviceError):
    """The device answered, but not as the protocol says (no SunS marker, bad model lengths)."""


class DeviceException(DeviceError):
    """The device answered a request with a Modbus exception response."""

    MODBUS_CODES: ClassVar[dict[int, str]] = {
        1: "ILLEGAL FUNCTION",
        2: "ILLEGAL DATA ADDRESS",
        3: "ILLEGAL DATA VALUE",
        4: "SERVER DEVICE FAILURE",
        5: "ACKNOWLEDGE",
        6: "SERVER DEVICE BUSY",
        10: "GATEWAY PATH UNAVAILABLE",
        11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
    }

    TRANSIENT_CODES: ClassVar[frozenset[int]] = frozenset({4, 5, 6, 10, 11})
    """Codes that say the device (or the gateway in front of it) cannot serve the request
    now, not that the request is wrong: a write answered with one is tried again."""

    def __init__(self, code: int, request: str) -> None:
        name = self.MODBUS_CODES.get(code, "UNKNOWN")
        super().__init__(f"Modbus exception {code} ({name}) on {request}")
        self.code = code
        self.retryable = code in self.TRANSIENT_CODES


class DeviceChanged(DeviceError):
    """The device is no longer as discovered: its models moved, or it forgot setpoints that
    were written to it and read back. It restarted (or reverted): rediscover and write again."""


class PointError(GatewayError):
    """A point write is invalid (unknown, read-only, wrong type, out of range, bad sf): ours."""

    def __init__(self, model_id: int, path: str, value: object, reason: str) -> None:
        super().__init__(f"model {model_id} point {path}: cannot write {value!r}: {reason}")
        self.model_id = model_id
        self.path = path
        self.value = value


class RegisterValueError(GatewayError):
    """A value cannot be written to a profile register (ours: out of range for its type)."""

    def __init__(self, register: str, address: int, value: float, reason: str) -> None:
        super().__init__(f"register {register}: cannot write {value!r}: {reason}")
        self.address = address
        self.value = value
        self.reason = reason


class LifecycleError(GatewayError):
    """An event's status change that the lifecycle's transition table does not have: a bug
    in the control core, never the sender's fault."""


class Unconvertible(GatewayError):
    """An outbox row that cannot become an InfluxDB point; the text says why."""


class ControlRefused(GatewayError):
    """A device answered, but did not take a setpoint: an exception, or a wrong read-back.

    Not a DeviceError: the device is reachable, only this control failed. ``point`` names
    the register or SunSpec point (``704.WMaxLimPct``), for the event's response detail.
    ``retryable``: the device answered an exception that says it is busy or failing (4, 5, 6,
    10, 11), not that the value is wrong; the write may succeed when tried again.
    """

    def __init__(self, device: str, point: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(f"{device}: {point}: {reason}")
        self.device = device
        self.point = point
        self.reason = reason
        self.retryable = retryable
