"""The fuzz targets: every parser of outside input, its input strategy, and what counts as a
typed answer.

A target's ``run(input)`` feeds one input to the code under test and returns normally when
the input ended in a value or in one of the target's typed errors (caught here, by exactly the
types the target names); anything else propagates: that is a crash. The test suite runs each
target 10,000 times with a fixed seed (tests/fuzz/test_fuzz.py); bench/fuzz.py runs longer
and counts crashes instead of stopping at the first.

Typed, per target:
- inbound MQTT (controls, arrays, cancels, defaults): nothing may raise; every answer is a
  command whose items are validated payloads or `Invalid` (what the control loop answers
  ``rejected`` / ``invalid``), and a valid event becomes the control loop's `Event`;
- JWS envelopes (signed controls): nothing may raise; the answer is `Signed` only for a
  payload signed with one of the role's own keys (an unaltered one always is), else
  `Refused` with a detail naming the role;
- SunSpec layout, codec, discovery and the driver over a random device: `DeviceError`
  (the device is not as the protocol says, or refused a read);
- register profiles: `DeviceProtocolError` for registers not read, `RegisterValueError` for
  a value a register cannot hold;
- OPC UA values: readings never raise; `to_node` raises ValueError (the driver's refusal,
  see devices/opcua/driver.py), nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import sunspec2
from hypothesis import strategies as st
from joserfc.jwk import OKPKey
from pydantic import ValidationError

from derms_edge.config import NodePoint, RegisterPoint
from derms_edge.devices.opcua.values import NUMBER_TYPES, Conversion, to_node
from derms_edge.devices.profile.codec import decode_reads, encode
from derms_edge.devices.sunspec import Discovery, DiscoveryResult, build_layout, decode
from derms_edge.devices.sunspec.driver import SunSpecDriver
from derms_edge.errors import (
    DeviceError,
    DeviceException,
    DeviceProtocolError,
    DeviceTimeout,
    RegisterValueError,
)
from derms_edge.model import DeviceKind, DeviceState
from derms_edge.northbound.commands import (
    Cancel,
    Controls,
    DefaultControl,
    EventPayload,
    Heartbeat,
    Invalid,
    parse_command,
)
from derms_edge.northbound.signed import KeyRing, Refused, Signed, sign
from derms_edge.northbound.topics import Topics

MAX_BYTES = 1024
"""mqtt.max_payload_bytes in the fuzz: the configuration's smallest, so oversize is cheap."""
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Target:
    """One parser of outside input, fuzzed."""

    name: str
    inputs: st.SearchStrategy[Any]
    run: Callable[[Any], None]


# --- JSON at the edges ---------------------------------------------------------------------

edge_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40) | st.integers(-(10**40), -(10**18)),
    st.floats(),  # NaN, inf, subnormals, -0.0
    st.sampled_from([0, -0, 1e308, -1e308, 5e-324, 2**63, 2**64, -(2**63) - 1, 1e-300, 255, 256]),
)
edge_text = st.one_of(
    st.text(max_size=70),
    st.sampled_from(
        [
            "",
            " ",
            "x" * 65,
            "2026-11-21T10:00:00Z",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "2026-02-30T10:00:00Z",
            "2026-11-21T10:00:00",  # naive
            "2026-11-21T10:00:00+25:00",
            "2026-11-21T10:00:00.123456789Z",
            "nan",
            "inf",
            "1e999",
            "cat_a",
            "native",
            "inject",
        ]
    ),
)
dates = st.one_of(
    st.datetimes(timezones=st.timezones() | st.just(UTC)).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # naive
    edge_text,
    edge_numbers,
)
scalars = st.none() | st.booleans() | edge_numbers | edge_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(edge_text, inner, max_size=3),
    max_leaves=8,
)


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value, or a JSON value of another type in its place."""
    return st.one_of(value, value, value, scalars, st.lists(scalars, max_size=2))


numbers = st.one_of(st.floats(-1e3, 1e3), edge_numbers)
volt_var = st.fixed_dictionaries(
    {},
    optional={
        "curve": maybe(st.sampled_from(["cat_a", "cat_b", "cat_c"])),
        "points": maybe(st.lists(st.tuples(numbers, numbers).map(list), max_size=11)),
        "v_ref_pu": maybe(numbers),
        "response_time_s": maybe(numbers),
        "mode": maybe(st.sampled_from(["auto", "native", "edge", "other"])),
    },
)
control = st.fixed_dictionaries(
    {},
    optional={
        "max_w_pct": maybe(numbers),
        "export_limit_w": maybe(numbers),
        "volt_var": maybe(volt_var),
        "fixed_pf": maybe(
            st.fixed_dictionaries(
                {"pf": maybe(numbers), "excitation": maybe(st.sampled_from(["inject", "absorb"]))}
            )
        ),
        "storage_w": maybe(numbers),
        "evse_max_a": maybe(numbers),
        "evse_max_w": maybe(numbers),
        "reserve_soc_pct": maybe(numbers),
    },
)
event = st.fixed_dictionaries(
    {},
    optional={
        "mrid": maybe(edge_text),
        "creation_time": maybe(dates),
        "primacy": maybe(numbers),
        "devices": maybe(st.lists(edge_text, max_size=3)),
        "start": maybe(dates),
        "duration_s": maybe(numbers),
        "randomize_start_s": maybe(numbers),
        "control": maybe(control),
        "extra": json_values,
    },
)
cancel = st.fixed_dictionaries({}, optional={"mrid": maybe(edge_text), "extra": json_values})


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity are written as JSON's extensions


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    json_values.map(_encode),
    event.map(_encode),
    st.lists(event, max_size=5).map(_encode),
    control.map(_encode),
    cancel.map(_encode),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 3000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(1, 6000).map(lambda digits: b'{"mrid":"a","duration_s":' + b"9" * digits + b"}"),
    st.integers(MAX_BYTES - 2, MAX_BYTES + 2).map(lambda n: b" " * n),
)
TOPICS = Topics("derms", "site")
topics = st.one_of(
    st.sampled_from(
        [
            "derms/v1/site/controls/dso",
            "derms/v1/site/controls/dso/cancel",
            "derms/v1/site/default_control/dso",
            "derms/v1/site/heartbeat/dso",
            "derms/v1/groups/feeder/controls/dso",
            "derms/v1/groups/feeder/controls/dso/cancel",
            "derms/v1/groups/feeder/default_control/dso",
            "derms/v1/site/controls/",
            "derms/v1/site/controls/dso/cancel/more",
            "derms/v1/other/controls/dso",
        ]
    ),
    st.text(max_size=60).map(lambda tail: f"derms/v1/site/{tail}"),
)


def run_inbound(given: tuple[str, bytes, bool]) -> None:
    topic, payload, retained = given
    command = parse_command(TOPICS, topic, payload, retained, max_bytes=MAX_BYTES)
    if command is None or isinstance(command, Heartbeat):
        return
    if isinstance(command, Controls):
        assert command.events, "a controls message is answered at least once"
        for item in command.events:
            assert isinstance(item, EventPayload | Invalid), item
            if isinstance(item, EventPayload):  # what the control loop does with it
                item.to_event(role="dso", primacy=1, now=NOW, delay_s=item.randomize_start_s)
            else:
                assert item.detail
    elif isinstance(command, Cancel):
        assert not isinstance(command.request, Invalid) or command.request.detail
    else:
        assert isinstance(command, DefaultControl), command


inbound = Target("inbound MQTT", st.tuples(topics, payloads, st.booleans()), run_inbound)


# --- JWS envelopes --------------------------------------------------------------------------

ROLE_KEYS = {role: OKPKey.generate_key("Ed25519") for role in ("dso", "aggregator")}
STRANGER = OKPKey.generate_key("Ed25519")
RING = KeyRing({role: [key] for role, key in ROLE_KEYS.items()})
KIDS = [key.thumbprint() for key in (*ROLE_KEYS.values(), STRANGER)]


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@dataclass(frozen=True, slots=True)
class Envelope:
    message: bytes
    role: str
    authentic: bytes | None
    """The payload that the role's own key signed (altered or not), else None."""
    unaltered: bool
    """The message is exactly what that key signed: it must verify."""


headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": maybe(st.sampled_from(["Ed25519", "EdDSA", "none", "HS256", "ES256", ""])),
        "kid": maybe(st.one_of(st.sampled_from(KIDS), edge_text)),
        "crit": json_values,
        "b64": maybe(st.booleans()),
        "typ": json_values,
    },
)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    """Raw bytes, forged compact JWSs (any header, any signature), and real signatures by
    the role's key, another role's or a stranger's, unaltered or with one character changed."""
    role = draw(st.sampled_from(["dso", "aggregator", "customer"]))
    payload = draw(payloads)
    kind = draw(st.sampled_from(["raw", "forged", "signed", "altered"]))
    if kind == "raw":
        return Envelope(draw(st.binary(max_size=400)), role, None, unaltered=False)
    if kind == "forged":
        header = draw(st.one_of(headers.map(_encode), st.binary(max_size=60)))
        signature = draw(st.binary(max_size=80))
        parts = [_b64(header), _b64(payload), _b64(signature)]
        return Envelope(b".".join(parts), role, None, unaltered=False)
    signer = draw(st.sampled_from([*ROLE_KEYS.values(), STRANGER]))
    own = ROLE_KEYS.get(role) is signer
    message = sign(payload, signer)
    if kind == "altered":
        at = draw(st.integers(0, len(message) - 1))
        message = (
            message[:at]
            + draw(st.sampled_from([b"A", b"_", b"-", b".", b"=", b"z"]))
            + (message[at + 1 :])
        )
    return Envelope(message, role, payload if own else None, unaltered=own and kind == "signed")


def run_jws(given: Envelope) -> None:
    opened = RING.open(given.message, given.role)
    if isinstance(opened, Signed):
        assert given.authentic is not None, "verified without the role's key"
        assert opened.payload == given.authentic, "a payload the key did not sign"
        assert opened.kid == ROLE_KEYS[given.role].thumbprint()
    else:
        assert isinstance(opened, Refused), opened
        assert not given.unaltered, opened.detail
        assert opened.detail.startswith(f"role {given.role}"), opened.detail


jws_envelope = Target("JWS envelopes", envelopes(), run_jws)


# --- SunSpec --------------------------------------------------------------------------------

SENTINELS = (0, 0xFFFF, 0x8000, 0x7FFF, 0x7FC0, 0xFFFE, 10, 0xFFF6, 0x5375, 0x6E53)
"""Register values that mean something: 0, not implemented (uint16, int16), int16's largest,
NaN's upper word, sf -2, 10 and -10, the SunS marker."""
registers = st.integers(0, 0xFFFF)
edge_registers = st.one_of(registers, st.sampled_from(SENTINELS))


def _words(data: bytes, marks: bytes) -> list[int]:
    """Registers from random bytes; every three bytes of ``marks`` put a sentinel at a random
    place (two bytes the place, one which sentinel)."""
    words = list(struct.unpack(f">{len(data) // 2}H", data[: len(data) // 2 * 2]))
    if words:
        for at in range(0, len(marks) - 2, 3):
            index = int.from_bytes(marks[at : at + 2], "big") % len(words)
            words[index] = SENTINELS[marks[at + 2] % len(SENTINELS)]
    return words


@cache
def register_images(count: int) -> st.SearchStrategy[list[int]]:
    """``count`` random registers, up to six of them set to a sentinel. Two draws of bytes,
    not one or more per register: hypothesis's cost is per draw, and these images are most of
    what the SunSpec targets draw. One strategy per count, built once: hypothesis validates a
    strategy at its first draw."""
    return st.builds(
        _words,
        st.binary(min_size=2 * count, max_size=2 * count),
        st.binary(max_size=18),
    )


register_runs = st.builds(_words, st.binary(max_size=24), st.binary(max_size=9))
"""Up to 12 registers, up to three of them sentinels: what a read of a few registers answers."""


@cache
def model_ids() -> tuple[int, ...]:
    """Every model pysunspec2 defines."""
    folder = Path(sunspec2.__file__).parent / "models" / "json"
    return tuple(sorted(int(path.stem.split("_")[1]) for path in folder.glob("model_*.json")))


any_model_id = st.sampled_from(model_ids())
model_lengths = st.integers(0, 400) | st.sampled_from([0, 1, 2, 65, 66, 1000])
image_counts = st.integers(0, 40)
image_kinds = st.sampled_from(["short", "exact", "around"])
"""How many registers a model image has: ``image_counts`` (short), its length's, or up to six
more (around)."""


@st.composite
def model_images(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """A model id, the length L a device reports, and registers from the ID register on (any
    length: too short, exact or too long)."""
    model_id = draw(any_model_id)
    length = draw(model_lengths)
    count = draw(image_counts)
    match draw(image_kinds):
        case "exact":
            count = length + 2  # the ID and L registers, then L registers
        case "around":
            count = length + count % 7
    return model_id, length, draw(register_images(min(count, 420)))


def run_sunspec_codec(given: tuple[int, int, list[int]]) -> None:
    model_id, length, image = given
    try:
        layout = build_layout(model_id, length, image)
    except DeviceError:
        return
    assert layout is not None
    for value in decode(layout, image).values():
        assert value is None or isinstance(value, int | float | str), value


sunspec_codec = Target("SunSpec layout and codec", model_images(), run_sunspec_codec)


chain_model_ids = (
    st.sampled_from([1, 101, 103, 113, 120, 121, 122, 123, 124, 126, 701, 704, 705, 802])
    | any_model_id
    | edge_registers
)
chain_lengths = st.integers(0, 120) | edge_registers


@st.composite
def devices(draw: st.DrawFn) -> dict[int, int]:
    """A register map: a SunSpec chain (or not) at a base, with random model IDs, lengths and
    end markers in odd places, plus random registers around it."""
    base = draw(st.sampled_from([40000, 0, 50000, 40001, 65534]))
    words: list[int] = []
    if draw(st.booleans()) or draw(st.booleans()):
        words += [0x5375, 0x6E53]
    else:
        words += draw(st.lists(edge_registers, min_size=0, max_size=2))
    for _ in range(draw(st.integers(0, 6))):
        model_id = draw(chain_model_ids)
        length = draw(chain_lengths)
        words += [model_id, length, *draw(register_images(min(length, 130)))]
        if draw(st.integers(0, 9)) == 0:  # an end marker in an odd place
            words += [0xFFFF, draw(edge_registers)]
    if draw(st.booleans()):
        words += [0xFFFF, draw(st.just(0) | edge_registers)]
    image = {base + i: word for i, word in enumerate(words) if base + i <= 0xFFFF}
    image |= draw(st.dictionaries(st.integers(0, 0xFFFF), edge_registers, max_size=5))
    return image


class MemoryDevice:
    """A Modbus device over a register map: exception 2 outside it; some reads time out."""

    def __init__(self, image: dict[int, int], timeouts: frozenset[int] = frozenset()) -> None:
        self.image = image
        self.timeouts = timeouts
        self.reads = 0

    def read_now(self, address: int, count: int) -> list[int]:
        self.reads += 1
        if self.reads in self.timeouts:
            raise DeviceTimeout(f"no answer to read {count} at {address}")
        try:
            return [self.image[a] for a in range(address, address + count)]
        except KeyError:
            raise DeviceException(2, f"read {count} at {address}") from None

    async def read(self, address: int, count: int) -> list[int]:
        return self.read_now(address, count)

    async def write(self, address: int, values: Sequence[int]) -> None:
        for offset, value in enumerate(values):
            self.image[address + offset] = value

    async def close(self) -> None:
        return None


timeouts = st.frozensets(st.integers(1, 30), max_size=2) | st.just(frozenset())


def run_discovery(given: tuple[dict[int, int], frozenset[int]]) -> None:
    image, failing = given
    device = MemoryDevice(image, failing)
    walk = Discovery()
    try:
        while True:
            step = walk.next_request()
            if isinstance(step, DiscoveryResult):
                assert len(step.models) <= 100
                return
            try:
                answer = device.read_now(step.address, step.count)
            except DeviceError as error:
                walk.receive_error(error)
            else:
                walk.receive(answer)
    except DeviceError:
        return


discovery = Target("SunSpec discovery", st.tuples(devices(), timeouts), run_discovery)

_LOOP = asyncio.new_event_loop()


def run_driver(given: tuple[dict[int, int], DeviceKind]) -> None:
    image, kind = given
    driver = SunSpecDriver(MemoryDevice(image), kind, "fuzz")

    async def connect_and_poll() -> None:
        await driver.connect()
        state = await driver.poll()
        assert isinstance(state, DeviceState)

    try:
        _LOOP.run_until_complete(connect_and_poll())
    except DeviceError:
        return


sunspec_driver = Target(
    "SunSpec driver over a random device",
    st.tuples(devices(), st.sampled_from(list(DeviceKind))),
    run_driver,
)


# --- register profiles ----------------------------------------------------------------------


def _point(address: int, register_type: str, scale: float) -> RegisterPoint | None:
    """The point as the configuration accepts it; None where it refuses it."""
    try:
        return RegisterPoint.model_validate(
            {"address": address, "type": register_type, "scale": scale}
        )
    except ValidationError:
        return None


profile_points = st.builds(
    _point,
    st.integers(0, 0xFFFF) | st.integers(0, 20),
    st.sampled_from(["uint16", "int16", "uint32", "int32", "float32"]),
    st.floats() | st.sampled_from([1.0, -1.0, 0.1, 1e-300, 1e300, 5e-324]),
).filter(lambda point: point is not None)
blocks = st.lists(
    st.tuples(
        st.integers(0, 30) | st.integers(0, 0xFFFF),
        register_runs,
    ),
    max_size=4,
)
values = st.floats() | st.integers(-(2**70), 2**70).map(float) | st.sampled_from([0.5, -0.5])


def run_profile(given: tuple[list[RegisterPoint], Any, str, float]) -> None:
    points, read, word_order, value = given
    try:
        decoded = decode_reads(dict(enumerate(points)), read, word_order)  # type: ignore[arg-type]
    except DeviceProtocolError:
        pass
    else:
        assert all(v is None or isinstance(v, float) for v in decoded.values())
    for point in points:
        try:
            words = encode(point, value, word_order)  # type: ignore[arg-type]
        except RegisterValueError:
            continue
        assert all(0 <= word <= 0xFFFF for word in words), words


profile = Target(
    "register-profile codec",
    st.tuples(
        st.lists(profile_points, min_size=1, max_size=4),
        blocks,
        st.sampled_from(["big", "little"]),
        values,
    ),
    run_profile,
)


# --- OPC UA values --------------------------------------------------------------------------

node_values = st.one_of(
    st.none(),
    st.booleans(),
    edge_numbers,
    st.text(max_size=20),
    st.binary(max_size=8),
    st.datetimes(),
    st.lists(st.integers(), max_size=3),
    st.sampled_from(["Charging", "standby", "2", "true", " Fault ", "ÄÖ", "\x00"]),
)


def _node_point(scale: float, unit: str | None) -> NodePoint | None:
    try:
        return NodePoint.model_validate({"node": "ns=2;i=1", "scale": scale, "unit": unit})
    except ValidationError:
        return None


node_points = st.builds(
    _node_point,
    st.floats() | st.sampled_from([1.0, -1.0, 1e-300, 1e300]),
    st.sampled_from([None, "kW", "W", "kV", "mA", "kWh", "MW", "%"]),
).filter(lambda point: point is not None)


MEASURED = ("w", "var", "va", "pf", "v", "hz", "a", "soc_pct", "wh_exported", "wh_imported")


def run_opcua(given: tuple[DeviceKind, NodePoint, dict[str, Any], Any, float, str]) -> None:
    kind, point, raw, states, setpoint, type_name = given
    factors = {}
    for name in (*MEASURED, "state"):
        try:
            factors[name] = point.factor(name)
        except KeyError:  # the unit is not one of this point's (the configuration refuses it)
            continue
    conversion = Conversion(kind, factors, states=states)  # type: ignore[arg-type]
    state = conversion.reading(raw)  # type: ignore[arg-type]
    assert isinstance(state, DeviceState)
    for value in (state.w, state.v, state.a, state.soc_pct):
        assert value is None or isinstance(value, float)
    factor = factors.get("w", 1.0)
    try:
        node_value = to_node(setpoint, factor, type_name)
    except ValueError:
        return
    assert isinstance(node_value, int | float)
    assert not isinstance(node_value, float) or math.isfinite(node_value), node_value


opcua = Target(
    "OPC UA value conversion",
    st.tuples(
        st.sampled_from(list(DeviceKind)),
        node_points,
        st.dictionaries(st.sampled_from([*MEASURED, "state"]), node_values, max_size=11),
        st.none() | st.dictionaries(st.text(max_size=5), st.sampled_from(["charging", "fault"])),
        values,
        st.sampled_from([*sorted(NUMBER_TYPES), "Boolean", "String"]),
    ),
    run_opcua,
)

TARGETS = (inbound, jws_envelope, sunspec_codec, discovery, sunspec_driver, profile, opcua)
