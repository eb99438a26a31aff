"""The rig's OPC UA devices over real asyncua sessions: the address-space contract, setpoints
and physics, write refusals, security (certificates, users), restarts and subscriptions.

One rig serves every test of the module on a clock the tests move by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import ValidationError

from hil.evse_physics import CHARGING_EFFICIENCY, EvsePhysics, EvseRatings, Vehicle
from hil.opcua.devices import OpcUaBattery, OpcUaCharger
from hil.opcua.pki import CLIENT_APPLICATION_URI, ensure_pki
from hil.physics import Grid
from hil.rig import Rig, RigThread
from tests.hil.harness import HOST, HandClock, rig, run

EVSE_NS = "urn:derms-edge:hil:evse"
BATTERY_NS = "urn:derms-edge:hil:battery"
USERS = {"operator": "s3cret"}

CHARGER_NODES = {  # name: (built-in type, writable)
    "PlugState": (ua.VariantType.Boolean, False),
    "Mode3State": (ua.VariantType.UInt16, False),
    "ActualPower": (ua.VariantType.Double, False),
    "Voltage": (ua.VariantType.Double, False),
    "Current": (ua.VariantType.Double, False),
    "Frequency": (ua.VariantType.Double, False),
    "EnergyDelivered": (ua.VariantType.Double, False),
    "EvSoC": (ua.VariantType.Double, False),
    "Phases": (ua.VariantType.Byte, False),
    "MaxCurrent": (ua.VariantType.Float, False),
    "MaxCurrentSetpoint": (ua.VariantType.Float, True),
}
BATTERY_NODES = {
    "ActivePower": (ua.VariantType.Double, False),
    "Voltage": (ua.VariantType.Double, False),
    "Frequency": (ua.VariantType.Double, False),
    "SoC": (ua.VariantType.Double, False),
    "SoCMin": (ua.VariantType.Double, False),
    "SoCMax": (ua.VariantType.Double, False),
    "CapacityWh": (ua.VariantType.UInt32, False),
    "MaxChargePower": (ua.VariantType.Double, False),
    "MaxDischargePower": (ua.VariantType.Double, False),
    "OperatingState": (ua.VariantType.String, False),
    "PowerSetpoint": (ua.VariantType.Int32, True),
}


@dataclass
class Bench:
    """The module's rig and the clock its tests move."""

    rt: RigThread
    clock: HandClock

    def advance(self, seconds: float) -> None:
        self.clock.t += seconds


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    spec = rig(
        {"id": "ev", "type": "opcua_evse", "tau_s": 0, "ev_wh": 100000, "ev_soc_pct": 30},
        {
            "id": "bat",
            "type": "opcua_battery",
            "tau_s": 0,
            "wh_rtg": 1000,
            "w_cha_max": 5000,
            "w_discha_max": 4000,
            "soc_min_pct": 20,
            "soc_max_pct": 90,
        },
        {"id": "sec", "type": "opcua_battery", "users": USERS},
        {"id": "rst", "type": "opcua_evse", "ev_wh": 1e6},  # never full
        {"id": "m", "type": "meter", "site": ["ev", "bat"]},
    )
    spec = spec.model_copy(update={"pki_dir": tmp_path_factory.mktemp("pki")})
    clock = HandClock()
    with RigThread(spec, clock=clock) as rt:
        yield Bench(rt, clock)


@dataclass
class Device:
    """An asyncua session with one rig device, its namespace index resolved by URI."""

    client: Client
    id: str
    ns: int

    def node(self, name: str) -> Any:
        return self.client.get_node(ua.NodeId(f"{self.id}.{name}", self.ns))

    async def read(self, name: str) -> Any:
        return await self.node(name).read_value()

    async def write(self, name: str, value: Any, vtype: ua.VariantType) -> None:
        await self.node(name).write_value(ua.DataValue(ua.Variant(value, vtype)))

    async def until(self, name: str, ok: Callable[[Any], bool], timeout_s: float = 2.0) -> Any:
        """The value once ok(value) holds (the rig republishes every 0.1 s)."""
        deadline = time.monotonic() + timeout_s
        while not ok(value := await self.read(name)):
            assert time.monotonic() < deadline, f"{self.id}.{name} stuck at {value!r}"
            await asyncio.sleep(0.05)
        return value


@contextlib.asynccontextmanager
async def session(
    rt: RigThread,
    device_id: str,
    *,
    user: tuple[str, str] | None = None,
    secure: bool = False,
    cert: Path | None = None,
    key: Path | None = None,
) -> AsyncIterator[Device]:
    client = Client(rt.endpoint(device_id), timeout=4)
    if user is not None:
        client.set_user(user[0])
        client.set_password(user[1])
    if secure:
        pki = rt.pki(device_id)
        client.application_uri = CLIENT_APPLICATION_URI
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(cert or pki.client_certificate),
            str(key or pki.client_private_key),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    async with client:
        uri = EVSE_NS if device_id in ("ev", "rst") else BATTERY_NS
        yield Device(client, device_id, await client.get_namespace_index(uri))


def check(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await scenario()

    run(main)


def status_of(error: pytest.ExceptionInfo[ua.UaStatusCodeError]) -> str:
    return ua.StatusCode(error.value.code).name


@pytest.mark.parametrize(
    ("device_id", "uri", "nodes"),
    [("ev", EVSE_NS, CHARGER_NODES), ("bat", BATTERY_NS, BATTERY_NODES)],
)
def test_address_space_is_the_contract(
    bench: Bench, device_id: str, uri: str, nodes: dict[str, tuple[ua.VariantType, bool]]
) -> None:
    async def scenario() -> None:
        async with session(bench.rt, device_id) as d:
            assert d.ns == 2
            assert (await d.client.get_namespace_array())[2] == uri
            folder = await d.client.nodes.objects.get_child(f"2:{device_id}")
            assert folder.nodeid == ua.NodeId(device_id, 2)
            found = {}
            for node in await folder.get_children():
                name = (await node.read_browse_name()).Name
                assert node.nodeid == ua.NodeId(f"{device_id}.{name}", 2)
                assert (await node.read_browse_name()).NamespaceIndex == 2
                vtype = await node.read_data_type_as_variant_type()
                access = await node.read_attribute(ua.AttributeIds.AccessLevel)
                user_access = await node.read_attribute(ua.AttributeIds.UserAccessLevel)
                assert access.Value.Value == user_access.Value.Value
                found[name] = (vtype, access.Value.Value == 3)  # CurrentRead | CurrentWrite
                assert (await node.read_data_value()).Value.VariantType == vtype
            assert found == nodes
            endpoints = await d.client.get_endpoints()
            assert {e.EndpointUrl for e in endpoints} == {bench.rt.endpoint(device_id)}
            assert {(e.SecurityPolicyUri.split("#")[-1], e.SecurityMode) for e in endpoints} == {
                ("None", ua.MessageSecurityMode.None_),
                ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt),
            }
            assert bench.rt.endpoint(device_id) == (
                f"opc.tcp://{HOST}:{bench.rt.port(device_id)}/derms-edge/hil/{device_id}"
            )

    check(scenario)


def test_power_on_values(bench: Bench) -> None:
    async def scenario() -> None:
        user = ("operator", "s3cret")
        async with session(bench.rt, "rst") as ev, session(bench.rt, "sec", user=user) as bat:
            assert await ev.read("MaxCurrentSetpoint") == 32.0
            assert await ev.read("MaxCurrent") == 32.0
            assert await ev.read("Phases") == 3
            assert await ev.read("PlugState") is True
            assert await bat.read("PowerSetpoint") == 0
            assert await bat.read("CapacityWh") == 10000
            assert await bat.read("OperatingState") == "Idle"
            assert await bat.read("SoCMin") == 5.0

    check(scenario)


def test_the_current_setpoint_charges_the_car(bench: Bench) -> None:
    async def scenario() -> None:
        async with session(bench.rt, "ev") as ev:
            await ev.write("MaxCurrentSetpoint", 16.0, ua.VariantType.Float)
            await ev.until("MaxCurrentSetpoint", lambda a: a == 16.0)
            start = bench.rt.snapshot("ev")
            bench.advance(600)
            await ev.until("Current", lambda a: a == pytest.approx(16.0))
            await ev.until("EvSoC", lambda soc: soc > start.soc_pct)
            v, w = await ev.read("Voltage"), await ev.read("ActualPower")
            assert w == pytest.approx(3 * v * 16.0)
            assert w == pytest.approx(3 * 230.0 * 16.0)  # consumed: positive
            assert await ev.read("Mode3State") == 2
            state = bench.rt.snapshot("ev")
            wh = 3 * 230.0 * 16.0 * (state.t_s - start.t_s) / 3600.0
            assert state.wh - start.wh == pytest.approx(wh)
            assert await ev.read("EnergyDelivered") == pytest.approx(state.wh / 1000.0)  # kWh
            soc = start.soc_pct + CHARGING_EFFICIENCY * wh / 100000 * 100
            assert state.soc_pct == pytest.approx(soc)

            await ev.write("MaxCurrentSetpoint", 0.0, ua.VariantType.Float)
            bench.advance(10)
            await ev.until("Current", lambda a: a == 0.0)
            assert await ev.read("ActualPower") == 0.0
            assert await ev.read("Mode3State") == 1  # connected, paused

            await ev.write("MaxCurrentSetpoint", 32.0, ua.VariantType.Float)
        writes = bench.rt.call(lambda r: r.opcua_device("ev").writes[-3:])
        assert writes == [
            ("MaxCurrentSetpoint", "Float", 16.0),
            ("MaxCurrentSetpoint", "Float", 0.0),
            ("MaxCurrentSetpoint", "Float", 32.0),
        ]

    check(scenario)


def test_unplugging_the_car(bench: Bench) -> None:
    def plug(plugged: bool) -> None:
        def act(r: Rig) -> None:
            device = r.opcua_device("ev")
            assert isinstance(device, OpcUaCharger)
            device.plug(plugged)

        bench.rt.call(act)

    async def scenario() -> None:
        async with session(bench.rt, "ev") as ev:
            plug(False)
            await ev.until("PlugState", lambda plugged: plugged is False)
            assert await ev.read("Mode3State") == 0
            assert await ev.read("Current") == 0.0
            plug(True)
            await ev.until("Mode3State", lambda state: state == 2)
            assert await ev.read("PlugState") is True

    check(scenario)


@pytest.mark.parametrize(
    ("device_id", "name", "value", "vtype", "status"),
    [
        ("ev", "MaxCurrentSetpoint", 5.0, ua.VariantType.Float, "BadOutOfRange"),
        ("ev", "MaxCurrentSetpoint", 32.5, ua.VariantType.Float, "BadOutOfRange"),
        ("ev", "MaxCurrentSetpoint", -6.0, ua.VariantType.Float, "BadOutOfRange"),
        ("ev", "MaxCurrentSetpoint", math.nan, ua.VariantType.Float, "BadOutOfRange"),
        ("ev", "MaxCurrentSetpoint", 16.0, ua.VariantType.Double, "BadTypeMismatch"),
        ("ev", "MaxCurrentSetpoint", 16, ua.VariantType.Int32, "BadTypeMismatch"),
        ("ev", "MaxCurrent", 16.0, ua.VariantType.Float, "BadNotWritable"),
        ("ev", "ActualPower", 0.0, ua.VariantType.Double, "BadNotWritable"),
        ("bat", "PowerSetpoint", 5001, ua.VariantType.Int32, "BadOutOfRange"),
        ("bat", "PowerSetpoint", -4001, ua.VariantType.Int32, "BadOutOfRange"),
        ("bat", "PowerSetpoint", 1000.0, ua.VariantType.Double, "BadTypeMismatch"),
        ("bat", "PowerSetpoint", 1000, ua.VariantType.Int64, "BadTypeMismatch"),
        ("bat", "SoC", 99.0, ua.VariantType.Double, "BadNotWritable"),
        ("bat", "OperatingState", "Charging", ua.VariantType.String, "BadNotWritable"),
    ],
)
def test_refused_writes_change_nothing(
    bench: Bench, device_id: str, name: str, value: Any, vtype: ua.VariantType, status: str
) -> None:
    async def scenario() -> None:
        async with session(bench.rt, device_id) as d:
            before = await d.read(name)
            writes = bench.rt.call(lambda r: len(r.opcua_device(device_id).writes))
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await d.write(name, value, vtype)
            assert status_of(refused) == status
            assert await d.read(name) == before
            assert bench.rt.call(lambda r: len(r.opcua_device(device_id).writes)) == writes

    check(scenario)


def force_soc(bench: Bench, pct: float) -> None:
    """Put battery bat at pct % now."""

    def force(r: Rig) -> None:
        device = r.opcua_device("bat")
        assert isinstance(device, OpcUaBattery)
        device.refresh()
        device.physics.soc_pct = pct

    bench.rt.call(force)


def test_battery_charges_and_discharges_within_its_soc_limits(bench: Bench) -> None:
    async def scenario() -> None:
        async with session(bench.rt, "bat") as bat:
            force_soc(bench, 50.0)
            await bat.write("PowerSetpoint", 2000, ua.VariantType.Int32)
            bench.advance(360)  # 200 Wh in, 190 Wh stored: +19 %
            await bat.until("SoC", lambda pct: pct == pytest.approx(69.0))
            assert await bat.read("ActivePower") == pytest.approx(2000.0)  # charging: positive
            assert await bat.read("OperatingState") == "Charging"
            assert bench.rt.snapshot("bat").w == pytest.approx(-2000.0)  # grid convention

            bench.advance(3600)
            await bat.until("SoC", lambda pct: pct == pytest.approx(90.0))  # SoCMax
            assert await bat.read("ActivePower") == 0.0
            assert await bat.read("OperatingState") == "Idle"

            await bat.write("PowerSetpoint", -4000, ua.VariantType.Int32)
            bench.advance(36)  # 40 Wh out, 42.1 Wh drawn: -4.21 %
            await bat.until("SoC", lambda pct: pct == pytest.approx(90.0 - 4 / 0.95))
            assert await bat.read("ActivePower") == pytest.approx(-4000.0)
            assert await bat.read("OperatingState") == "Discharging"

            bench.advance(3600)
            await bat.until("SoC", lambda pct: pct == pytest.approx(20.0))  # SoCMin
            assert await bat.read("ActivePower") == 0.0
            await bat.write("PowerSetpoint", 0, ua.VariantType.Int32)

    check(scenario)


def test_the_meter_sums_the_opcua_devices(bench: Bench) -> None:
    def balance(r: Rig) -> tuple[float, float, float]:
        with r.clock.held():
            meter = r.snapshot("m")
            return (
                meter.w,
                r.opcua_device("ev").grid_power()[0],
                r.opcua_device("bat").grid_power()[0],
            )

    async def scenario() -> None:
        async with session(bench.rt, "bat") as bat:
            force_soc(bench, 50.0)
            await bat.write("PowerSetpoint", -1000, ua.VariantType.Int32)  # discharges
            bench.advance(5)
            meter_w, ev_w, bat_w = bench.rt.call(balance)
            assert ev_w < 0 < bat_w
            assert bat_w == pytest.approx(1000.0)
            assert meter_w == pytest.approx(ev_w + bat_w)  # no house load
            await bat.write("PowerSetpoint", 0, ua.VariantType.Int32)

    check(scenario)


def test_pki_files_and_certificates(bench: Bench) -> None:
    pki = bench.rt.pki("sec")
    assert pki.server_certificate.name == "server-sec-cert.der"
    assert pki.server_private_key.name == "server-sec-key.pem"
    assert (pki.client_certificate.name, pki.client_private_key.name) == (
        "client-cert.der",
        "client-key.pem",
    )
    assert bench.rt.pki("ev").client_certificate == pki.client_certificate
    server = x509.load_der_x509_certificate(pki.server_certificate.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:derms-edge:hil:sec"]
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    client = x509.load_der_x509_certificate(pki.client_certificate.read_bytes())
    san = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [CLIENT_APPLICATION_URI]


def test_pki_files_are_generated_only_when_missing(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path, "d", HOST)
    files = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    assert ensure_pki(tmp_path, "d", HOST) == first
    assert {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == files
    first.server_certificate.unlink()
    ensure_pki(tmp_path, "d", HOST)
    assert first.server_private_key.read_bytes() != files[first.server_private_key]
    assert first.client_certificate.read_bytes() == files[first.client_certificate]
    assert (first.trusted_dir / "client-cert.der").read_bytes() == files[first.client_certificate]


def test_without_a_pki_dir_the_rig_makes_a_temporary_one() -> None:
    with RigThread(rig({"id": "d", "type": "opcua_battery"})) as rt:
        pki_dir = rt.pki("d").server_certificate.parent
        assert pki_dir.is_dir()
        assert pki_dir.name.startswith("derms-edge-hil-pki-")
    assert not pki_dir.exists()


def test_secure_endpoint_takes_the_rig_client_certificate(bench: Bench) -> None:
    async def scenario() -> None:
        async with session(bench.rt, "sec", user=("operator", "s3cret"), secure=True) as bat:
            assert bat.client.security_policy.Mode == ua.MessageSecurityMode.SignAndEncrypt
            assert await bat.read("SoC") == 50.0
            await bat.write("PowerSetpoint", 0, ua.VariantType.Int32)

    check(scenario)


def test_an_untrusted_client_certificate_is_refused(bench: Bench, tmp_path: Path) -> None:
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(CLIENT_APPLICATION_URI)]
    rogue = cert_gen.generate_self_signed_app_certificate(
        key, "rogue", {}, names, [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    cert, key_file = tmp_path / "rogue-cert.der", tmp_path / "rogue-key.pem"
    cert.write_bytes(rogue.public_bytes(Encoding.DER))
    key_file.write_bytes(cert_gen.dump_private_key_as_pem(key))

    async def scenario() -> None:
        with pytest.raises(ua.UaStatusCodeError) as refused:
            async with session(
                bench.rt, "sec", user=("operator", "s3cret"), secure=True, cert=cert, key=key_file
            ):
                pass
        assert status_of(refused) == "BadCertificateUntrusted"

    check(scenario)


@pytest.mark.parametrize(
    ("user", "status"),
    [
        (None, "BadIdentityTokenRejected"),  # anonymous
        (("operator", "wrong"), "BadUserAccessDenied"),
        (("intruder", "s3cret"), "BadUserAccessDenied"),
        (("operator", "s3cret"), None),
    ],
)
def test_users_are_checked(bench: Bench, user: tuple[str, str] | None, status: str | None) -> None:
    async def scenario() -> None:
        if status is None:
            async with session(bench.rt, "sec", user=user) as bat:  # password encrypted
                assert await bat.read("PowerSetpoint") == 0
            return
        with pytest.raises(ua.UaStatusCodeError) as refused:
            async with session(bench.rt, "sec", user=user):
                pass
        assert status_of(refused) == status

    check(scenario)


def test_restart_keeps_the_port_and_can_shift_the_namespace(bench: Bench) -> None:
    rt = bench.rt
    port, url = rt.port("rst"), rt.endpoint("rst")

    async def before() -> None:
        async with session(rt, "rst") as d:
            assert d.ns == 2
            await d.write("MaxCurrentSetpoint", 10.0, ua.VariantType.Float)

    check(before)
    soc = rt.snapshot("rst").soc_pct
    restart = threading.Thread(target=rt.restart, args=("rst",), kwargs={"down_s": 0.5})
    restart.start()
    time.sleep(0.25)
    with pytest.raises(OSError):
        socket.create_connection((HOST, port), timeout=1).close()  # down: nobody listens
    restart.join()
    assert (rt.port("rst"), rt.endpoint("rst")) == (port, url)
    bench.advance(60)

    async def after() -> None:
        async with session(rt, "rst") as d:
            assert d.ns == 2
            assert await d.read("MaxCurrentSetpoint") == 32.0  # back to its power-on value
            assert await d.until("EvSoC", lambda pct: pct > soc)  # the car charged on

    check(after)
    rt.restart("rst", shift_namespaces=True)

    async def shifted() -> None:
        async with session(rt, "rst") as d:
            assert d.ns == 3
            namespaces = await d.client.get_namespace_array()
            assert namespaces[2:] == ["urn:derms-edge:hil:shift:1", EVSE_NS]
            assert await d.read("MaxCurrent") == 32.0
            with pytest.raises(ua.UaStatusCodeError) as unknown:
                await d.client.get_node("ns=2;s=rst.MaxCurrent").read_value()
            assert status_of(unknown) == "BadNodeIdUnknown"

    check(shifted)
    assert rt.port("rst") == port


def test_subscriptions_keep_notifying_while_values_are_steady(bench: Bench) -> None:
    class Collect:
        def __init__(self) -> None:
            self.values: list[ua.DataValue] = []

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            self.values.append(data.monitored_item.Value)

    async def scenario() -> None:
        async with session(bench.rt, "bat") as bat:
            collect = Collect()
            sub = await bat.client.create_subscription(50, collect)
            trigger = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
            item = ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(
                    NodeId=bat.node("SoC").nodeid, AttributeId=ua.AttributeIds.Value
                ),
                MonitoringMode=ua.MonitoringMode.Reporting,
                RequestedParameters=ua.MonitoringParameters(
                    ClientHandle=1, SamplingInterval=0, Filter=trigger, QueueSize=10
                ),
            )
            [handle] = await sub.create_monitored_items([item])
            assert isinstance(handle, int)
            await asyncio.sleep(0.8)  # the clock stands still: SoC does not change
            await sub.delete()
        values = {dv.Value.Value for dv in collect.values}
        stamps = [dv.SourceTimestamp for dv in collect.values]
        assert len(values) == 1
        assert len(stamps) >= 4
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == len(stamps)

    check(scenario)


def test_evse_physics_without_a_watchdog_holds_the_limit() -> None:
    p = EvsePhysics(
        EvseRatings(3, 32.0, math.inf),
        Vehicle(1e9, 32.0),
        Grid(),
        soc_pct=10.0,
        safe_a=0.0,
        plugged_at=0.0,
        tau_s=0.0,
    )
    p.step(1.0)
    assert p.applied_a == 32.0  # max_a from power-on
    p.write_limit(10.0)
    p.step(1e6)
    assert (p.applied_a, p.a, p.validity_s) == (10.0, 10.0, math.inf)
    p.power_on()
    assert p.applied_a == 32.0


@pytest.mark.parametrize(
    ("devices", "error"),
    [
        (
            [
                {"id": "a", "type": "opcua_evse", "port": 4841},
                {"id": "b", "type": "opcua_battery", "port": 4841},
            ],
            "host and port of its own",
        ),
        (
            [
                {"id": "a", "type": "pv_legacy", "port": 4841},
                {"id": "b", "type": "opcua_evse", "port": 4841},
            ],
            "host and port of its own",
        ),
        ([{"id": "a.b", "type": "opcua_evse"}], "pattern"),
        ([{"id": "a", "type": "opcua_battery", "soc_min_pct": 90, "soc_max_pct": 80}], "below"),
        ([{"id": "a", "type": "opcua_evse", "validity_s": 60}], "Extra inputs"),
    ],
)
def test_opcua_specs_are_checked(devices: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        rig(*devices)


def test_a_modbus_only_rig_does_not_import_asyncua() -> None:
    code = (
        "import sys; from hil.rig import Rig; from hil.spec import RigSpec; "
        "Rig(RigSpec.model_validate({'devices': [{'id': 'pv', 'type': 'pv_legacy'}]})); "
        "print('asyncua' in sys.modules)"
    )
    root = Path(__file__).parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
