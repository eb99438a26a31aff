"""The rig specification: which simulated devices to serve, where, with which nameplate (YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import sunspec2
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

SUNSPEC2_PREFIX = "sunspec2:"  # replay files shipped inside the pysunspec2 package
MAX_BASE = 65535 - 5
"""The highest SunS marker address a map fits above (marker, one model header, end model)."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridSpec(_Spec):
    """Grid at the device: 230 V / 50 Hz by default; 120/240 V / 60 Hz with split_phase."""

    v_nom: float = Field(default=230.0, gt=0, description="line-to-neutral V")
    hz_nom: float = Field(default=50.0, gt=0)
    split_phase: bool = False
    noise_v: float = Field(default=0.0, ge=0, description="standard deviation, V")
    noise_hz: float = Field(default=0.0, ge=0, description="standard deviation, Hz")
    seed: int = 0


class ConstantProfileSpec(_Spec):
    """Available DC power fixed at w."""

    kind: Literal["constant"]
    w: float = Field(ge=0)


class TableProfileSpec(_Spec):
    """(t_s, W) points interpolated, looped with the last t as period unless loop is false."""

    kind: Literal["table"]
    points: list[tuple[float, float]] = Field(min_length=1)
    loop: bool = True


class ClearSkyProfileSpec(_Spec):
    """A clear-sky day compressed into day_s seconds, starting at start_h o'clock."""

    kind: Literal["clear_sky"]
    peak_w: float | None = Field(default=None, ge=0, description="default: the W rating")
    day_s: float = Field(default=86400.0, gt=0)
    start_h: float = Field(default=6.0, ge=0, lt=24)
    sunrise_h: float = Field(default=6.0, ge=0, lt=24)
    sunset_h: float = Field(default=18.0, gt=0, le=24)


ProfileSpec = Annotated[
    ConstantProfileSpec | TableProfileSpec | ClearSkyProfileSpec, Field(discriminator="kind")
]


class _DeviceSpec(_Spec):
    id: str = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0: any free port")
    unit_id: int = Field(default=1, ge=0, le=247)
    gateway: str | None = Field(
        default=None,
        description="devices naming the same gateway share one port (useful with port 0)",
    )


class _SunSpecDeviceSpec(_DeviceSpec):
    base: int = Field(
        default=40000,
        ge=0,
        le=MAX_BASE,
        description="the SunS marker's address: 40000, 0 or 50000 as the spec says, or "
        "where a real device's manual puts it (4096, 1000)",
    )
    manufacturer: str = "derms-edge"
    model_name: str = "HIL"
    serial: str | None = Field(default=None, description="default: the device id")
    version: str = "1.0.0"
    grid: GridSpec = GridSpec()


class _DerSpec(_SunSpecDeviceSpec):
    tau_s: float = Field(default=1.0, ge=0, description="first-order response time constant, s")


class _PvSpec(_DerSpec):
    w_rtg: float = Field(default=5000.0, gt=0)
    va_rtg: float | None = Field(default=None, gt=0, description="default: w_rtg")
    var_rtg: float | None = Field(default=None, gt=0, description="default: 44 % of va_rtg")
    profile: ProfileSpec | None = Field(default=None, description="default: constant at w_rtg")
    dynamics: Literal["simple", "opender"] = Field(
        default="simple", description="opender: IEEE 1547-2018 P and Q from EPRI's OpenDER"
    )


class PvLegacySpec(_PvSpec):
    """PV inverter with models 1, 103, 120, 121, 123, 126."""

    type: Literal["pv_legacy"]
    vv_curves: int = Field(default=2, ge=1, le=4, description="volt-var curves in model 126")


class Pv1547Spec(_PvSpec):
    """IEEE 1547 PV inverter with models 1, 701-705, 712, 715."""

    type: Literal["pv_1547"]
    w_rtg: float = Field(default=10000.0, gt=0)
    vv_curves: int = Field(default=3, ge=2, le=8, description="curves in models 705 and 712")


class _BatteryPhysicsSpec(_Spec):
    """What BatteryPhysics needs, shared by the SunSpec and the OPC UA battery."""

    wh_rtg: float = Field(default=10000.0, gt=0)
    w_cha_max: float = Field(default=5000.0, gt=0)
    w_discha_max: float = Field(default=5000.0, gt=0)
    efficiency: float = Field(default=0.95, gt=0, le=1, description="one-way")
    soc_pct: float = Field(default=50.0, ge=0, le=100)
    soc_min_pct: float = Field(default=5.0, ge=0, le=100)
    soc_max_pct: float = Field(default=100.0, ge=0, le=100)
    tau_s: float = Field(default=1.0, ge=0, description="first-order response time constant, s")
    grid: GridSpec = GridSpec()
    dynamics: Literal["simple", "opender"] = Field(
        default="simple", description="opender: P, Q and SoC from EPRI's OpenDER (DER_BESS)"
    )

    @model_validator(mode="after")
    def _soc_range(self) -> _BatteryPhysicsSpec:
        if not self.soc_min_pct < self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        return self


class BatterySpec(_DerSpec, _BatteryPhysicsSpec):
    """Battery inverter with models 1, 103, 124, 713, 802."""

    type: Literal["battery"]
    va_rtg: float | None = Field(
        default=None, gt=0, description="default: max(w_cha_max, w_discha_max)"
    )
    v_bat: float = Field(default=400.0, gt=0, description="battery (DC) voltage, V")


class _EvsePhysicsSpec(_Spec):
    """What EvsePhysics needs besides the watchdog, shared by the Modbus and the OPC UA charger."""

    phases: Literal[1, 3] = 3
    max_a: float = Field(default=32.0, ge=6, le=80, description="highest limit, A per phase")
    grid: GridSpec = GridSpec()
    plugged_at_s: float | None = Field(
        default=0.0, ge=0, description="car plugged in from this simulated s on; None: no car"
    )
    ev_wh: float = Field(default=60000.0, gt=0, description="car battery capacity, Wh")
    ev_soc_pct: float = Field(default=30.0, ge=0, le=100)
    ev_max_a: float = Field(default=32.0, gt=0, description="the car's own limit, A per phase")
    tau_s: float = Field(default=1.0, ge=0, description="first-order response time constant, s")


class EvseSpec(_DeviceSpec, _EvsePhysicsSpec):
    """Modbus EV charger (vendor map like Alfen NG9xx) with a car plugged in."""

    type: Literal["evse"]
    validity_s: float = Field(default=60.0, gt=0, description="a written limit lasts this long")
    safe_a: float = Field(default=6.0, ge=0, description="signalled after the validity, A")

    @model_validator(mode="after")
    def _safe_current(self) -> EvseSpec:
        if not (self.safe_a == 0 or 6 <= self.safe_a <= self.max_a):
            raise ValueError("safe_a must be 0 or 6..max_a")
        return self


class MeterSpec(_SunSpecDeviceSpec):
    """Three-phase wye site meter with models 1 and 203, at the grid connection of a site."""

    type: Literal["meter"]
    site: list[str] = Field(
        default_factory=list, description="ids of the rig devices whose power flows through it"
    )
    load: ProfileSpec | None = Field(default=None, description="house load, W (default: none)")
    a_max: float = Field(default=40.0, gt=0, description="current rating per phase, A")

    @model_validator(mode="after")
    def _wye(self) -> MeterSpec:
        if self.grid.split_phase:
            raise ValueError("model 203 is a three-phase wye meter: split_phase is not allowed")
        if len(set(self.site)) != len(self.site):
            raise ValueError("site lists a device twice")
        return self


class ReplaySpec(_DeviceSpec):
    """A static image: {"base", "registers"} JSON, or a pysunspec2 device JSON ({"models"})."""

    type: Literal["replay"]
    file: Path
    base: int = Field(
        default=40000, ge=0, le=MAX_BASE, description="for pysunspec2 device JSON only"
    )


class _OpcUaDeviceSpec(_Spec):
    """One asyncua server per device at opc.tcp://host:port/derms-edge/hil/<id>."""

    id: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="letters, digits, _ and -: it is part of the endpoint URL and the node ids",
    )
    host: str = "127.0.0.1"
    port: int = Field(
        default=0, ge=0, le=65535, description="0: a free port picked at start, kept on restart"
    )
    users: dict[str, str] | None = Field(
        default=None, description="username: password; when set, anonymous sessions are refused"
    )


class OpcUaEvseSpec(_OpcUaDeviceSpec, _EvsePhysicsSpec):
    """OPC UA EV charger with a car; the current-limit setpoint holds until changed."""

    type: Literal["opcua_evse"]


class OpcUaBatterySpec(_OpcUaDeviceSpec, _BatteryPhysicsSpec):
    """OPC UA battery (BMS-style nodes) with the SunSpec battery's physics."""

    type: Literal["opcua_battery"]


class OcppEvseSpec(_EvsePhysicsSpec):
    """OCPP charging station (one EVSE, one connector) with a car; it connects out to a CSMS
    at csms_url/<station_id> and enforces the composite of the charging profiles it accepts."""

    type: Literal["ocpp_evse"]
    id: str = Field(min_length=1)
    version: Literal["2.0.1", "1.6"] = "2.0.1"
    station_id: str = Field(
        min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$", description="identity, the URL's last part"
    )
    csms_url: str = Field(
        pattern=r"^wss?://", description="ws://host:port/path; the station id is appended"
    )
    evse_id: int = Field(default=1, ge=1, description="2.0.1 EVSE id")
    connector_id: int = Field(default=1, ge=1)
    password: str | None = Field(
        default=None, description="HTTP Basic auth (security profile 1) as station_id:password"
    )
    meter_interval_s: float = Field(default=10.0, gt=0, description="simulated s")
    reject_station_wide_profiles: bool = False
    rate_units: list[Literal["A", "W"]] = Field(default=["A", "W"], min_length=1)
    max_stack_level: int = Field(default=8, ge=0)
    max_periods: int = Field(default=24, ge=1)
    unplugged_at_s: float | None = Field(
        default=None, ge=0, description="the car leaves at this simulated s (None: stays)"
    )
    id_tag: str = Field(default="HIL-TAG", min_length=1, max_length=20)
    reports_soc: bool = Field(default=True, description="the car tells its SoC (ISO 15118)")
    reconnect_min_s: float = Field(default=1.0, gt=0, description="first reconnect delay, s")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="backoff ceiling, s")
    vendor: str = "derms-edge"
    model: str = "HIL-OCPP"


OpcUaSpec = OpcUaEvseSpec | OpcUaBatterySpec
ModbusSpec = PvLegacySpec | Pv1547Spec | BatterySpec | EvseSpec | MeterSpec | ReplaySpec
DeviceSpec = Annotated[ModbusSpec | OpcUaSpec | OcppEvseSpec, Field(discriminator="type")]


class RigSpec(_Spec):
    """All devices of a rig, the simulation speed and an optional background tick."""

    speed: float = Field(default=1.0, gt=0, description="simulated seconds per wall second")
    tick_s: float | None = Field(
        default=None, gt=0, description="step every device this often (wall s)"
    )
    pki_dir: Path | None = Field(
        default=None,
        description="certificates of the OPC UA servers and the gateway (default: a temporary "
        "directory made at rig start); missing files are generated, present ones kept",
    )
    devices: list[DeviceSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> RigSpec:
        ids = [d.id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise ValueError("device ids must be unique")
        units = [
            (d.host, d.port, d.unit_id)
            for d in self.devices
            if isinstance(d, ModbusSpec) and d.port
        ]
        if len(set(units)) != len(units):
            raise ValueError("two devices share host, port and unit_id")
        modbus = {(host, port) for host, port, _ in units}
        opcua = [(d.host, d.port) for d in self.devices if isinstance(d, OpcUaSpec) and d.port]
        if len(set(opcua)) != len(opcua) or modbus & set(opcua):
            raise ValueError("an OPC UA device needs a host and port of its own")
        return self

    @model_validator(mode="after")
    def _meter_sites(self) -> RigSpec:
        types = {d.id: d.type for d in self.devices}
        for meter in self.devices:
            if isinstance(meter, MeterSpec):
                for d in meter.site:
                    if types.get(d) in (None, "meter", "replay"):
                        raise ValueError(f"{meter.id}: site device {d!r} is not a DER of the rig")
        return self


def resolve_file(file: Path, relative_to: Path) -> Path:
    """A replay file path: 'sunspec2:…' inside pysunspec2, else relative to the rig file."""
    text = str(file)
    if text.startswith(SUNSPEC2_PREFIX):
        return Path(sunspec2.__file__).parent / text.removeprefix(SUNSPEC2_PREFIX)
    return file if file.is_absolute() else relative_to / file


def load_rig_spec(path: str | Path) -> RigSpec:
    """Read and validate a rig YAML file, resolving replay files and pki_dir against its
    directory."""
    path = Path(path)
    spec = RigSpec.model_validate(yaml.safe_load(path.read_text()))
    pki_dir = spec.pki_dir if spec.pki_dir is None else path.parent / spec.pki_dir
    devices = [
        d.model_copy(update={"file": resolve_file(d.file, path.parent)})
        if isinstance(d, ReplaySpec)
        else d
        for d in spec.devices
    ]
    return spec.model_copy(update={"devices": devices, "pki_dir": pki_dir})
