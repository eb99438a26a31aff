"""OpcUaDriver against real asyncua servers: the rig's charger and battery (in a thread of
their own, as a device would be), and a small server of this file's for what the rig has not
(other data types, static values, a server that refuses or drops subscriptions).

The rig's simulated time is moved by hand (`Wall`), so its values hold still and a reading can
be compared with the server's exactly; the servers still republish every value with a fresh
source timestamp, as real ones do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Server, ua

from derms_edge.cli import main
from derms_edge.config import OpcUaDevice, parse_config
from derms_edge.devices import factory
from derms_edge.devices.modbus import LinkPool
from derms_edge.devices.opcua import subscription as subscription_module
from derms_edge.devices.opcua.driver import OpcUaDriver
from derms_edge.errors import ConnectionLost, ControlRefused, DeviceError, DeviceProtocolError
from derms_edge.model import OperatingState, SetpointName
from hil.devices import EvseState
from hil.opcua.pki import _ensure_pair
from hil.physics import SimClock
from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.opcua_nodes import BATTERY_NS, EVSE_NS, battery_nodes, charger_nodes
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

PLANT = "urn:derms-edge:test:plant"
EVSE_MAX_A, STORAGE_W = SetpointName.EVSE_MAX_A, SetpointName.STORAGE_W
MAX_W_PCT, VAR = SetpointName.MAX_W_PCT, SetpointName.VAR
T = Any  # a test's result


class Wall:
    """The rig's time source, moved by the tests: simulated time stands still in between."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    """A charger and a battery, and a second charger that wants a user name and password."""
    spec = RigSpec.model_validate(
        {
            "devices": [
                {"id": "ev1", "type": "opcua_evse"},
                {"id": "bat1", "type": "opcua_battery"},
                {"id": "ev2", "type": "opcua_evse", "users": {"gw": "secret"}},
            ]
        }
    )
    wall = Wall()
    with RigThread(spec, clock=SimClock(1.0, source=wall)) as running:
        wall.t = 120.0  # two minutes in: the car charges at full current
        yield running


def configure(entry: dict[str, Any]) -> OpcUaDevice:
    base = {"protocol": "opcua", "timeout_s": 2.0, "poll_interval_s": 0.1}
    device = parse_config({"gateway": {"id": "site"}, "devices": [{**base, **entry}]}).devices[0]
    assert isinstance(device, OpcUaDevice)
    return device


def charger(rig: RigThread, device_id: str = "ev1", **changes: Any) -> OpcUaDevice:
    """The rig's charger as a site would configure it (configs/residential.yaml)."""
    nodes = charger_nodes(device_id)
    nodes.update(changes.pop("nodes", {}))
    entry = {"id": device_id, "kind": "evse", "endpoint": rig.endpoint(device_id)}
    return configure({**entry, "publishing_interval_ms": 50, "nodes": nodes, **changes})


def battery(rig: RigThread, **changes: Any) -> OpcUaDevice:
    nodes = battery_nodes("bat1")
    nodes.update(changes.pop("nodes", {}))
    entry = {"id": "bat1", "kind": "battery", "endpoint": rig.endpoint("bat1")}
    return configure({**entry, "publishing_interval_ms": 50, "nodes": nodes, **changes})


def secure(rig: RigThread, device_id: str, **changes: Any) -> dict[str, Any]:
    pki = rig.pki(device_id)
    return {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(pki.client_certificate),
        "private_key": str(pki.client_private_key),
        "server_certificate": str(pki.server_certificate),
        **changes,
    }


def values(rig: RigThread, device_id: str) -> dict[str, Any]:
    """What the device's server holds now."""
    return rig.call(lambda r: r.opcua_device(device_id).values())


def writes(rig: RigThread, device_id: str) -> list[tuple[str, str, Any]]:
    """The client writes the device accepted: (variable, VariantType name, value)."""
    return rig.call(lambda r: list(r.opcua_device(device_id).writes))


def on(device: OpcUaDevice, scenario: Callable[[OpcUaDriver], Awaitable[T]]) -> T:
    """Run a scenario with a fresh driver of the device, closed afterwards."""

    async def run() -> T:
        driver = OpcUaDriver(device)
        try:
            return await scenario(driver)
        finally:
            await driver.close()

    return asyncio.run(run())


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("not reached")
        await asyncio.sleep(0.02)


def age(driver: OpcUaDriver) -> float:
    """How long ago the subscription last confirmed the driver's values, s."""
    sample = driver.sampled_at()
    assert sample is not None
    return time.monotonic() - sample.at


async def lost(driver: OpcUaDriver, timeout_s: float = 5.0) -> ConnectionLost:
    """Poll until the driver notices its session is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            await driver.poll()
        except ConnectionLost as error:
            return error
        await asyncio.sleep(0.02)
    raise AssertionError("the driver did not notice the lost session")


# -- reading -------------------------------------------------------------------------------


def test_a_chargers_telemetry_is_the_servers_values_in_si_units(rig: RigThread) -> None:
    async def scenario(driver: OpcUaDriver) -> Any:
        assert driver.supports() == frozenset()
        capability = await driver.connect()
        assert driver.supports() == {EVSE_MAX_A}
        assert driver.mode == "subscription"
        await asyncio.sleep(0.2)  # the first notifications
        return capability, await driver.poll(), age(driver)

    capability, state, confirmed_s = on(charger(rig), scenario)
    held = values(rig, "ev1")
    assert (capability.max_a, capability.phases) == (32.0, 3)
    assert capability.w_max == 3 * 230.0 * 32.0
    assert held["ActualPower"] > 20000  # charging at full current
    assert state.w == -held["ActualPower"]  # scale -1: consumption is negative
    assert state.a == 3 * held["Current"]  # A per phase in, the total out
    assert state.v == held["Voltage"]
    assert state.hz == held["Frequency"]
    assert state.soc_pct == held["EvSoC"]
    assert state.wh_imported == held["EnergyDelivered"] * 1000  # unit: kWh
    assert state.state is OperatingState.CHARGING  # Mode3State 2
    assert (state.var, state.va, state.pf, state.wh_exported) == (None, None, None, None)
    assert confirmed_s < 0.5  # confirmed by the subscription a moment ago


def test_a_batterys_telemetry_and_nameplate(rig: RigThread) -> None:
    async def scenario(driver: OpcUaDriver) -> Any:
        capability = await driver.connect()
        await asyncio.sleep(0.2)
        return capability, await driver.poll()

    capability, state = on(battery(rig), scenario)
    held = values(rig, "bat1")
    assert capability.wh_rtg == held["CapacityWh"] == 10000
    assert (capability.charge_w_max, capability.discharge_w_max) == (5000.0, 5000.0)
    assert (capability.soc_min_pct, capability.soc_max_pct) == (5.0, 100.0)
    assert (capability.max_a, capability.phases) == (None, None)
    assert state.w == -held["ActivePower"]
    assert state.soc_pct == held["SoC"]
    assert state.state is OperatingState(held["OperatingState"].lower())


def test_poll_mode_reads_the_same_in_one_request(rig: RigThread) -> None:
    async def scenario(driver: OpcUaDriver) -> Any:
        await driver.connect()
        assert driver.mode == "poll"
        state = await driver.poll()
        assert driver.sampled_at() is None  # measured when read
        return state

    state = on(charger(rig, subscribe=False), scenario)
    held = values(rig, "ev1")
    assert state.w == -held["ActualPower"]
    assert state.wh_imported == held["EnergyDelivered"] * 1000


def test_a_device_with_a_setpoint_only_reads_nothing(rig: RigThread) -> None:
    setpoint = {"max_a_setpoint": f"nsu={EVSE_NS};s=ev1.MaxCurrentSetpoint"}
    device = configure(
        {"id": "ev1", "kind": "evse", "endpoint": rig.endpoint("ev1"), "nodes": setpoint}
    )

    async def scenario(driver: OpcUaDriver) -> Any:
        await driver.connect()
        assert driver.mode == "poll"
        await driver.write(EVSE_MAX_A, 10)
        return await driver.poll()

    state = on(device, scenario)
    assert state.w is None and state.state is OperatingState.IDLE


def test_a_wrong_node_id_names_the_device_the_point_and_the_status(rig: RigThread) -> None:
    wrong = f"nsu={EVSE_NS};s=ev1.ActualPowr"
    with pytest.raises(DeviceProtocolError) as caught:
        on(charger(rig, nodes={"w": wrong}), lambda d: d.connect())
    message = str(caught.value)
    assert message.startswith(f"ev1: {rig.endpoint('ev1')}: nodes.w ({wrong}): BadNodeIdUnknown")


def test_an_unknown_namespace_uri_lists_the_servers_namespaces(rig: RigThread) -> None:
    with pytest.raises(DeviceProtocolError) as caught:
        on(charger(rig, nodes={"v": "nsu=urn:nowhere;s=ev1.Voltage"}), lambda d: d.connect())
    message = str(caught.value)
    assert "nodes.v (nsu=urn:nowhere;s=ev1.Voltage): the server has no namespace" in message
    assert f": {EVSE_NS}" in message and "0: http://opcfoundation.org/UA/" in message


# -- writing -------------------------------------------------------------------------------


def test_setpoints_reach_their_nodes_in_the_nodes_data_types(rig: RigThread) -> None:
    async def charge(driver: OpcUaDriver) -> None:
        await driver.connect()
        await driver.write(EVSE_MAX_A, 16)
        await driver.write(EVSE_MAX_A, 0)
        await driver.write(EVSE_MAX_A, None)  # released: the charger's max_a

    async def store(driver: OpcUaDriver) -> None:
        await driver.connect()
        assert driver.supports() == {STORAGE_W}
        await driver.write(STORAGE_W, 2000.0)  # discharge 2 kW: -2000 in a charge-positive node
        await driver.write(STORAGE_W, -1500.4)  # charge, rounded for an Int32
        await driver.write(STORAGE_W, None)

    before_ev, before_bat = len(writes(rig, "ev1")), len(writes(rig, "bat1"))
    on(charger(rig), charge)
    on(battery(rig), store)
    assert writes(rig, "ev1")[before_ev:] == [
        ("MaxCurrentSetpoint", "Float", 16.0),
        ("MaxCurrentSetpoint", "Float", 0.0),
        ("MaxCurrentSetpoint", "Float", 32.0),
    ]
    assert writes(rig, "bat1")[before_bat:] == [
        ("PowerSetpoint", "Int32", -2000),
        ("PowerSetpoint", "Int32", 1500),
        ("PowerSetpoint", "Int32", 0),
    ]


def test_a_refused_write_names_the_node_and_the_status(rig: RigThread) -> None:
    setpoint = f"nodes.max_a_setpoint (nsu={EVSE_NS};s=ev1.MaxCurrentSetpoint)"

    async def scenario(driver: OpcUaDriver) -> ControlRefused:
        await driver.connect()
        with pytest.raises(ControlRefused) as caught:
            await driver.write(EVSE_MAX_A, 40)  # the gateway allows it (max_a 40), the server not
        return caught.value

    refusal = on(charger(rig, max_a=40), scenario)
    assert (refusal.device, refusal.point) == ("ev1", setpoint)
    assert refusal.reason.startswith("BadOutOfRange: The value was out of range.")
    assert "wrote 40.0 as Float for 40 A" in refusal.reason

    async def too_much(driver: OpcUaDriver) -> ControlRefused:
        await driver.connect()
        with pytest.raises(ControlRefused) as caught:
            await driver.write(STORAGE_W, 6000)  # above MaxDischargePower
        return caught.value

    assert on(battery(rig), too_much).reason.startswith("BadOutOfRange")

    read_only = {"max_a_setpoint": f"nsu={EVSE_NS};s=ev1.MaxCurrent"}

    async def not_writable(driver: OpcUaDriver) -> ControlRefused:
        await driver.connect()
        with pytest.raises(ControlRefused) as caught:
            await driver.write(EVSE_MAX_A, 16)
        return caught.value

    assert on(charger(rig, nodes=read_only), not_writable).reason.startswith("BadNotWritable")


def test_values_the_device_cannot_take_are_refused_before_sending(rig: RigThread) -> None:
    async def scenario(driver: OpcUaDriver) -> list[str]:
        await driver.connect()
        reasons = []
        for name, value in ((EVSE_MAX_A, 3.0), (EVSE_MAX_A, 33.0), (MAX_W_PCT, 50.0)):
            with pytest.raises(ControlRefused) as caught:
                await driver.write(name, value)
            reasons.append(caught.value.reason)
        return reasons

    before = len(writes(rig, "ev1"))
    reasons = on(charger(rig), scenario)
    assert reasons == [
        "3 A cannot be signalled: 0 pauses, else 6..32 A",
        "33 A is above the charger's max_a 32 A",
        "no node is configured for it (nodes.max_w_pct_setpoint)",
    ]
    assert len(writes(rig, "ev1")) == before

    async def huge(driver: OpcUaDriver) -> str:
        await driver.connect()
        with pytest.raises(ControlRefused) as caught:
            await driver.write(STORAGE_W, -3e9)
        return caught.value.reason

    assert (
        on(battery(rig), huge)
        == "-3e+09 W: 3e+09 is outside the Int32 range -2147483648..2147483647"
    )


# -- sessions ------------------------------------------------------------------------------


def test_node_ids_by_uri_survive_a_restart_that_shifts_the_namespaces(rig: RigThread) -> None:
    async def scenario(driver: OpcUaDriver) -> str:
        await driver.connect()
        await driver.write(EVSE_MAX_A, 20)
        await asyncio.to_thread(rig.restart, "ev1", 0.0, True)
        error = await lost(driver)
        await driver.connect()
        await driver.write(EVSE_MAX_A, 18)  # the node is found at its new index
        await asyncio.sleep(0.2)
        assert (await driver.poll()).w == -values(rig, "ev1")["ActualPower"]
        return str(error)

    shifted = rig.call(lambda r: r.opcua_servers["ev1"].shifted_namespaces)
    error = on(charger(rig), scenario)
    assert error.startswith(f"ev1: {rig.endpoint('ev1')}: lost the session")
    assert rig.call(lambda r: r.opcua_servers["ev1"].shifted_namespaces) == shifted + 1
    assert writes(rig, "ev1")[-1] == ("MaxCurrentSetpoint", "Float", 18.0)
    index = 2 + shifted + 1
    by_index = {"w": {"node": f"ns={index - 1};s=ev1.ActualPower", "scale": -1}}
    with pytest.raises(DeviceProtocolError, match="BadNodeIdUnknown"):
        on(charger(rig, nodes=by_index), lambda d: d.connect())  # the old index is gone


def test_the_coordinator_reconnects_after_a_restart_and_writes_the_limit_again(
    rig: RigThread,
) -> None:
    def limit_a() -> float:
        snapshot = rig.snapshot("ev1")
        assert isinstance(snapshot, EvseState)
        return snapshot.limit_a

    async def scenario() -> None:
        device = charger(rig, backoff_max_s=0.2)
        coordinator = factory.build_coordinator(device, LinkPool())
        task = asyncio.create_task(coordinator.run())
        try:
            coordinator.command({EVSE_MAX_A: 16.0})
            await until(lambda: coordinator.applied.get(EVSE_MAX_A) == 16.0)
            assert limit_a() == 16.0
            failures, written = coordinator.failures, len(writes(rig, "ev1"))
            await asyncio.to_thread(rig.restart, "ev1", 1.0)  # refused for 1 s, then up again
            await until(lambda: coordinator.failures > failures)
            # the restarted charger came back at its power-on 32 A: the limit is written again
            await until(lambda: writes(rig, "ev1")[written:] != [], 10.0)
            assert writes(rig, "ev1")[written:] == [("MaxCurrentSetpoint", "Float", 16.0)]
            assert limit_a() == 16.0
            await until(lambda: coordinator.applied == {EVSE_MAX_A: 16.0})  # read back
            assert coordinator.connected
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_connecting_to_a_server_that_is_down(rig: RigThread) -> None:
    port = free_port()
    device = charger(rig, endpoint=f"opc.tcp://127.0.0.1:{port}/derms-edge/hil/ev1")
    with pytest.raises(ConnectionLost, match=r"connection refused \(is the server running\?\)"):
        on(device, lambda d: d.connect())


# -- security ------------------------------------------------------------------------------


def test_a_secure_session_with_the_gateways_certificate(
    rig: RigThread, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(driver: OpcUaDriver) -> float | None:
        await driver.connect()
        await driver.write(EVSE_MAX_A, 20)
        await asyncio.sleep(0.2)
        return (await driver.poll()).w

    with caplog.at_level(logging.INFO, logger="derms_edge.devices.opcua.driver"):
        w = on(charger(rig, security=secure(rig, "ev1")), scenario)
    assert w is not None and w < 0
    assert "(Basic256Sha256 SignAndEncrypt)" in caplog.text
    assert writes(rig, "ev1")[-1] == ("MaxCurrentSetpoint", "Float", 20.0)


def test_a_server_presenting_another_certificate_is_refused(rig: RigThread) -> None:
    other = str(rig.pki("bat1").server_certificate)
    device = charger(rig, security=secure(rig, "ev1", server_certificate=other))
    with pytest.raises(DeviceProtocolError) as caught:
        on(device, lambda d: d.connect())
    message = str(caught.value)
    assert "presented certificate CN=derms-edge hil ev1" in message
    assert f"not the one in security.server_certificate {other}" in message
    assert message.endswith("refusing to connect")


def test_a_certificate_the_server_does_not_trust(rig: RigThread, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.der", tmp_path / "key.pem"
    _ensure_pair(cert, key, "urn:derms-edge:stranger", "stranger", None)
    security = secure(rig, "ev1", certificate=str(cert), private_key=str(key))
    with pytest.raises(DeviceProtocolError, match="BadCertificateUntrusted: the server did not"):
        on(charger(rig, security=security), lambda d: d.connect())


def test_missing_certificate_files_are_named(rig: RigThread, tmp_path: Path) -> None:
    security = secure(rig, "ev1", private_key=str(tmp_path / "key.pem"))
    with pytest.raises(DeviceError, match=r"ev1: security\.private_key: cannot read .*key\.pem"):
        on(charger(rig, security=security), lambda d: d.connect())


def test_user_name_and_password(rig: RigThread) -> None:
    security = secure(rig, "ev2")
    good = charger(rig, "ev2", security=security, username="gw", password="secret")
    assert on(good, lambda d: d.connect()).max_a == 32.0
    wrong = charger(rig, "ev2", security=security, username="gw", password="guess")
    with pytest.raises(
        DeviceProtocolError, match="BadUserAccessDenied: the server refused user 'gw'"
    ):
        on(wrong, lambda d: d.connect())
    with pytest.raises(DeviceProtocolError, match="the server refused anonymous access"):
        on(charger(rig, "ev2", security=security), lambda d: d.connect())


# -- discover ------------------------------------------------------------------------------


def test_discover_lists_the_variables_and_prints_a_working_configuration(
    rig: RigThread, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = rig.endpoint("ev1")
    assert main(["discover", "--opcua", endpoint]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[1:] for line in out.splitlines() if line.startswith("# nsu=")]
    assert [f"nsu={EVSE_NS};s=ev1.ActualPower", "ev1/ActualPower", "Double", "r"] in rows
    assert [
        f"nsu={EVSE_NS};s=ev1.MaxCurrentSetpoint",
        "ev1/MaxCurrentSetpoint",
        "Float",
        "rw",
    ] in rows
    assert len(rows) == 11
    (entry,) = yaml.safe_load(out)["devices"]
    assert entry["kind"] == "evse"
    assert entry["nodes"]["max_a_setpoint"] == f"nsu={EVSE_NS};s=ev1.MaxCurrentSetpoint"
    assert entry["nodes"]["state"] == f"nsu={EVSE_NS};s=ev1.Mode3State"
    entry["nodes"]["w"] = {"node": entry["nodes"]["w"], "scale": -1}  # as the comment says

    async def scenario(driver: OpcUaDriver) -> Any:
        await driver.connect()
        await asyncio.sleep(0.2)
        return await driver.poll()

    state = on(configure(entry), scenario)
    assert state.w == -values(rig, "ev1")["ActualPower"]


def test_discover_over_a_secure_channel(rig: RigThread, capsys: pytest.CaptureFixture[str]) -> None:
    pki = rig.pki("bat1")
    argv = ["discover", "--opcua", rig.endpoint("bat1"), "--security", "Basic256Sha256"]
    argv += ["--certificate", str(pki.client_certificate)]
    argv += ["--private-key", str(pki.client_private_key)]
    argv += ["--server-certificate", str(pki.server_certificate)]
    assert main(argv) == 0
    (entry,) = yaml.safe_load(capsys.readouterr().out)["devices"]
    assert entry["kind"] == "battery"
    assert entry["security"]["server_certificate"] == str(pki.server_certificate)
    assert entry["nodes"]["storage_w_setpoint"] == f"nsu={BATTERY_NS};s=bat1.PowerSetpoint"


def test_discover_when_the_server_cannot_be_reached_or_the_arguments_are_wrong(
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/x"
    assert main(["discover", "--opcua", endpoint, "--timeout", "1"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"discover: {endpoint}: connection refused (is the server running?)"
    )
    assert main(["discover", "--opcua", "http://127.0.0.1:4840"]) == 2
    assert main(["discover", "--opcua", endpoint, "--security", "Basic256Sha256"]) == 2
    assert "needs certificate and private-key" in capsys.readouterr().err
    assert main(["discover"]) == 2
    assert main(["discover", "--host", "127.0.0.1", "--username", "gw"]) == 2
    assert "--username apply to --opcua only" in capsys.readouterr().err


# -- a server of our own: other data types, static values, subscriptions refused or dropped


@asynccontextmanager
async def plant() -> AsyncIterator[tuple[Server, str, dict[str, ua.NodeId]]]:
    """An inverter-like server whose values change only when the test writes them."""
    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/plant"
    server = Server()
    await server.init()
    server.set_endpoint(endpoint)
    ns = await server.register_namespace(PLANT)
    folder = await server.nodes.objects.add_object(
        ua.NodeId(ua.String("plant"), ua.Int16(ns)), "plant"
    )
    nodes = {}
    for name, value, vtype, writable in (
        ("Power", 4.2, ua.VariantType.Double, False),  # kW
        ("PowerLimitPct", 100, ua.VariantType.UInt16, True),
        ("ReactiveSetpoint", 0.0, ua.VariantType.Double, True),  # kvar
        ("Name", "plant", ua.VariantType.String, True),
    ):
        node_id = ua.NodeId(ua.String(f"plant.{name}"), ua.Int16(ns))
        node = await folder.add_variable(node_id, name, ua.Variant(value, vtype))
        if writable:
            await node.set_writable()
        nodes[name] = node_id
    async with server:
        yield server, endpoint, nodes


def inverter(endpoint: str, **changes: Any) -> OpcUaDevice:
    node = f"nsu={PLANT};s=plant."
    nodes = {
        "w": {"node": node + "Power", "unit": "kW"},
        "max_w_pct_setpoint": node + "PowerLimitPct",
        "var_setpoint": {"node": node + "ReactiveSetpoint", "unit": "kvar"},
        **changes.pop("nodes", {}),
    }
    entry = {"id": "pv1", "kind": "inverter", "endpoint": endpoint, "nodes": nodes}
    return configure({"publishing_interval_ms": 50, "timeout_s": 0.5, **entry, **changes})


def test_an_inverters_setpoints_in_their_types_and_units() -> None:
    async def scenario() -> None:
        async with plant() as (server, endpoint, nodes):
            driver = OpcUaDriver(inverter(endpoint))
            await driver.connect()
            assert driver.supports() == {MAX_W_PCT, VAR}
            await driver.write(MAX_W_PCT, 55.4)  # UInt16: rounded
            assert await server.get_node(nodes["PowerLimitPct"]).read_value() == 55
            await driver.write(VAR, -1500.0)  # kvar
            assert await server.get_node(nodes["ReactiveSetpoint"]).read_value() == -1.5
            await driver.write(MAX_W_PCT, None)
            await driver.write(VAR, None)
            assert await server.get_node(nodes["PowerLimitPct"]).read_value() == 100
            assert await server.get_node(nodes["ReactiveSetpoint"]).read_value() == 0.0
            with pytest.raises(ControlRefused, match=r"-5 %: -5 is outside the UInt16 range"):
                await driver.write(MAX_W_PCT, -5.0)
            await driver.close()

    asyncio.run(scenario())


def test_a_setpoint_node_must_hold_a_number() -> None:
    async def scenario() -> None:
        async with plant() as (_, endpoint, _nodes):
            device = inverter(endpoint, nodes={"var_setpoint": f"nsu={PLANT};s=plant.Name"})
            with pytest.raises(DeviceProtocolError, match="has data type String; a setpoint"):
                await OpcUaDriver(device).connect()

    asyncio.run(scenario())


def test_a_value_held_still_is_confirmed_by_the_keep_alives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OPC UA notifies changes only: a live subscription's keep-alives vouch for the rest."""
    monkeypatch.setattr(subscription_module, "KEEPALIVE_S", 0.2)

    async def scenario() -> None:
        async with plant() as (_, endpoint, _nodes):
            driver = OpcUaDriver(inverter(endpoint))
            await driver.connect()
            await asyncio.sleep(0.3)
            changes = driver.notifications
            for _ in range(8):  # 2 s of a value that holds still
                await asyncio.sleep(0.25)
                assert (await driver.poll()).w == 4200.0
                sample = driver.sampled_at()
                assert sample is not None and sample.vouched_s == pytest.approx(0.2)
                assert age(driver) < 0.2 + 0.1  # a keep-alive came within its promise
            assert driver.notifications == changes  # no data change: keep-alives only
            await driver.close()

    asyncio.run(scenario())


def test_a_stalled_subscription_stops_confirming_and_is_then_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(subscription_module, "KEEPALIVE_S", 0.2)

    async def scenario() -> None:
        async with plant() as (server, endpoint, _):
            driver = OpcUaDriver(inverter(endpoint))
            await driver.connect()
            await asyncio.sleep(0.3)
            for subscription in list(server.iserver.subscription_service.subscriptions.values()):
                await subscription.stop()  # the server's publishing stalls; reads still work
            stalled = time.monotonic()
            sample = driver.sampled_at()
            assert sample is not None
            await asyncio.sleep(0.5)
            await driver.poll()  # the session still answers, the subscription is not lost yet
            assert driver.sampled_at() == sample  # nothing confirms the values any more
            assert sample.at + sample.vouched_s < time.monotonic() - 0.2
            error = await lost(driver)
            assert "no notification or keep-alive for" in str(error)
            assert time.monotonic() - stalled < 3 * 0.2 + 0.5 + 1.0  # missed x3 + timeout
            await driver.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "status", [ua.StatusCodes.UncertainLastUsableValue, ua.StatusCodes.BadSensorFailure]
)
def test_a_value_whose_status_is_not_good_is_no_longer_confirmed(status: int) -> None:
    async def scenario() -> None:
        async with plant() as (server, endpoint, nodes):
            driver = OpcUaDriver(inverter(endpoint))
            await driver.connect()
            await asyncio.sleep(0.3)
            value = ua.Variant(4.2, ua.VariantType.Double)
            await server.write_attribute_value(
                nodes["Power"], ua.DataValue(value, StatusCode=ua.StatusCode(status))
            )
            degraded = time.monotonic()
            await until(lambda: driver.notifications > 0)
            await asyncio.sleep(0.5)  # keep-alives and publishes go on
            await driver.poll()
            sample = driver.sampled_at()
            assert sample is not None and sample.vouched_s == 0
            assert degraded <= sample.at < degraded + 0.3  # when the status turned
            await server.write_attribute_value(nodes["Power"], ua.DataValue(value))
            await until(lambda: age(driver) < 0.1)  # Good again: current again
            assert (await driver.poll()).w == 4200.0
            await driver.close()

    asyncio.run(scenario())


def test_max_value_age_judges_by_the_values_own_changes() -> None:
    """For a server known to refresh source timestamps: a value that did not is stale."""

    async def scenario() -> None:
        async with plant() as (server, endpoint, nodes):
            device = inverter(endpoint, max_value_age_s=0.4)
            assert device.stale_after == 0.4
            driver = OpcUaDriver(device)
            await driver.connect()
            await asyncio.sleep(0.6)
            state = await driver.poll()
            assert age(driver) >= 0.5  # the seed read at connect: nothing changed since
            assert state.w == 4200.0
            await server.write_attribute_value(
                nodes["Power"], ua.DataValue(ua.Variant(3.9, ua.VariantType.Double))
            )
            await until(lambda: age(driver) < 0.3)
            assert (await driver.poll()).w == 3900.0
            await driver.close()

    asyncio.run(scenario())


def test_a_server_that_refuses_subscriptions_is_polled(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with plant() as (server, endpoint, _):
            server.iserver.max_subscriptions = 0
            driver = OpcUaDriver(inverter(endpoint))
            with caplog.at_level(logging.INFO, logger="derms_edge.devices.opcua.driver"):
                await driver.connect()
            assert driver.mode == "poll"
            assert (await driver.poll()).w == 4200.0
            await driver.close()

    asyncio.run(scenario())
    assert "polling every 0.1 s (the server refused a subscription: BadTooManySubscriptions)" in (
        caplog.text
    )


def test_a_subscription_the_server_dropped_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscription_module, "KEEPALIVE_S", 0.2)

    async def scenario() -> str:
        async with plant() as (server, endpoint, _):
            driver = OpcUaDriver(inverter(endpoint))
            await driver.connect()
            await driver.poll()
            service = server.iserver.subscription_service
            await service.delete_subscriptions(list(service.subscriptions))
            error = await lost(driver)
            await driver.close()
            return str(error)

    message = asyncio.run(scenario())
    assert "no notification or keep-alive for" in message
