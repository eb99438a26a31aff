"""Modbus devices in the configuration: where they are (TCP or a serial port), SunSpec
devices, and register profiles (a vendor's map described as data)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from derms_edge.config.device import DeviceSection, StorageSettings
from derms_edge.model import MAX_EVSE_A, MIN_EVSE_A, DeviceKind
from derms_edge.schema import Strict


class SerialSection(Strict):
    port: str = Field(min_length=1)
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class ModbusDevice(DeviceSection):
    """A Modbus device: where it is (TCP or serial) and its unit id."""

    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial: SerialSection | None = None
    unit_id: int = Field(1, ge=0, le=247)

    @model_validator(mode="after")
    def _one_link(self) -> Self:
        if (self.host is None) == (self.serial is None):
            raise ValueError("give either host (Modbus TCP) or serial (Modbus RTU), not both")
        return self

    @property
    def link(self) -> str:
        """Where the device is, for people: host:port or the serial port."""
        if self.serial is not None:
            return f"{self.serial.port}@{self.serial.baudrate}/{self.serial.parity}"
        return f"{self.host}:{self.port}"

    @property
    def connection(self) -> str:
        """The serial port or host:port: devices with the same one share one Modbus link."""
        return self.serial.port if self.serial is not None else f"{self.host}:{self.port}"


SUNSPEC_BASES: tuple[int, ...] = (40000, 0, 50000)
"""Where the SunSpec Modbus specification puts the SunS marker, in the order discovery
looks for it."""
MAX_SUNSPEC_BASE = 65535 - 5
"""The highest base a SunSpec map fits above: the SunS marker, one model's ID and length,
and the end model take six registers."""


class SunSpecDevice(ModbusDevice, StorageSettings):
    """A device that speaks SunSpec Modbus."""

    protocol: Literal["sunspec"]
    base_address: int | None = Field(None, ge=0, le=MAX_SUNSPEC_BASE)
    """Holding register of the SunS marker, as the device's manual gives it (an AccuEnergy
    AcuRev 1310 has it at 4096, a Veris meter at 1000); omitted: discovered at 40000, 0 and
    50000 in that order."""


RegisterType = Literal["uint16", "int16", "uint32", "int32", "float32"]


class RegisterPoint(Strict):
    """One value in a vendor's register map: holding register address, type and scale."""

    address: int = Field(ge=0, le=65535)
    type: RegisterType = "uint16"
    scale: float = 1.0
    """Value in SI units = raw x scale (a negative scale flips the sign)."""

    @model_validator(mode="after")
    def _scale_and_room(self) -> Self:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.address == 65535 and not self.type.endswith("16"):
            raise ValueError(f"a {self.type} takes two registers: 65535 is the last address")
        return self


MeasuredName = Literal["w", "va", "v", "a", "hz", "wh_imported", "soc_pct"]


class EvseProfile(Strict):
    """A Modbus EV charger's register map (a vendor quirk is data, not code)."""

    name: str = Field(min_length=1)
    """Which charger this describes, for people (e.g. "alfen-ng9xx")."""
    word_order: Literal["big", "little"] = "big"
    """Order of the 16-bit words in 32-bit values."""
    phases: Literal[1, 3] = 3
    max_a: float = Field(32.0, ge=MIN_EVSE_A, le=MAX_EVSE_A)
    """Highest current limit the charger (and its cable) takes, A per phase."""
    measurements: dict[MeasuredName, RegisterPoint] = Field(default_factory=dict)
    """Read every poll. W is positive for power delivered to the grid (charging is negative);
    ``a`` is the current per phase (readings report the total, phases x a)."""
    current_limit: RegisterPoint
    """The current limit register, A per phase; written, then read back."""
    refresh_s: float = Field(30.0, gt=0, le=3600)
    """The limit is re-written this often, inside the charger's validity (watchdog) time."""
    validity: RegisterPoint | None = None
    """Remaining validity of the written limit, s (read; 0 means the charger fell back)."""


class ProfileDevice(ModbusDevice):
    """A non-SunSpec Modbus device described by a register profile (EV chargers)."""

    protocol: Literal["modbus"]
    profile: EvseProfile

    @model_validator(mode="after")
    def _kind(self) -> Self:
        if self.kind != DeviceKind.EVSE:
            raise ValueError(
                f"register profiles describe EV chargers (kind: evse), not {self.kind}"
            )
        return self
