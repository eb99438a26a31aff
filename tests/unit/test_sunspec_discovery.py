"""The discovery state machine, driven by hand and over in-memory register maps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from derms_edge.devices.sunspec import (
    Discovery,
    DiscoveryResult,
    ModelHeader,
    NeedRegisters,
    discover,
)
from derms_edge.errors import (
    DeviceError,
    DeviceException,
    DeviceProtocolError,
    DeviceTimeout,
    TransportError,
)

SUNS = [0x5375, 0x6E53]
Read = Callable[[int, int], Sequence[int]]


def register_map(
    base: int, models: Sequence[tuple[int, int]], tail: Sequence[int] = (0xFFFF, 0)
) -> dict[int, int]:
    """A SunSpec map at ``base``: marker, each (ID, L) with L zero registers, then ``tail``."""
    words = list(SUNS)
    for model_id, length in models:
        words += [model_id, length] + [0] * length
    words += tail
    return {base + i: word for i, word in enumerate(words)}


def device(registers: dict[int, int]) -> Read:
    """A read function over a register map: Modbus exception 2 for any register not in it."""

    def read(address: int, count: int) -> Sequence[int]:
        try:
            return [registers[a] for a in range(address, address + count)]
        except KeyError:
            raise DeviceException(2, f"read {count} at {address}") from None

    return read


def walk(read: Read, discovery: Discovery | None = None) -> DiscoveryResult:
    """Drive a Discovery with a synchronous read, the way ``discover`` does."""
    discovery = discovery or Discovery()
    while True:
        step = discovery.next_request()
        if isinstance(step, DiscoveryResult):
            return step
        try:
            registers = read(step.address, step.count)
        except DeviceError as error:
            discovery.receive_error(error)
        else:
            discovery.receive(registers)


def test_requests_follow_the_sunspec_walk() -> None:
    discovery = Discovery()
    assert discovery.next_request() == NeedRegisters(40000, 2)
    discovery.receive(SUNS)
    assert discovery.next_request() == NeedRegisters(40002, 1)
    discovery.receive([1])
    assert discovery.next_request() == NeedRegisters(40003, 1)
    discovery.receive([66])
    assert discovery.next_request() == NeedRegisters(40070, 1)
    discovery.receive([103])
    assert discovery.next_request() == NeedRegisters(40071, 1)
    discovery.receive([50])
    assert discovery.next_request() == NeedRegisters(40122, 1)
    discovery.receive([0xFFFF])
    assert discovery.next_request() == NeedRegisters(40123, 1)
    discovery.receive([0])

    result = discovery.next_request()

    assert result == DiscoveryResult(
        base=40000,
        models=(ModelHeader(1, 40002, 66), ModelHeader(103, 40070, 50)),
        warnings=(),
    )
    assert discovery.next_request() == result  # stays done


def test_bases_are_tried_in_order_until_the_marker_is_found() -> None:
    registers = register_map(50000, [(1, 66), (103, 50)])
    registers[40000], registers[40001] = 0x1234, 0x5678  # something, but not SunS
    requests: list[tuple[int, int]] = []
    read = device(registers)

    def logged(address: int, count: int) -> Sequence[int]:
        requests.append((address, count))
        return read(address, count)

    result = walk(logged)

    assert requests[:3] == [(40000, 2), (0, 2), (50000, 2)]
    assert result.base == 50000
    assert [m.model_id for m in result.models] == [1, 103]


def test_no_marker_anywhere_names_every_base() -> None:
    registers = {40000: 0x1234, 40001: 0x5678}
    with pytest.raises(DeviceProtocolError, match="no SunS marker at 40000, 0 or 50000") as caught:
        walk(device(registers))
    message = str(caught.value)
    assert "40000: found 0x1234 0x5678" in message
    assert "0: Modbus exception 2 (ILLEGAL DATA ADDRESS) on read 2 at 0" in message


def test_custom_bases() -> None:
    result = walk(device(register_map(1000, [(1, 66)])), Discovery(bases=(1000,)))
    assert result.base == 1000
    with pytest.raises(DeviceProtocolError, match="no SunS marker at 2000 "):
        walk(device(register_map(1000, [(1, 66)])), Discovery(bases=(2000,)))
    with pytest.raises(ValueError, match="at least one base"):
        Discovery(bases=())


def test_a_device_that_never_answers_is_a_transport_error_not_a_protocol_error() -> None:
    def silent(address: int, count: int) -> Sequence[int]:
        raise DeviceTimeout(f"no answer to read {count} at {address}")

    with pytest.raises(TransportError, match="no SunS marker at 40000, 0 or 50000"):
        walk(silent)


def test_timeout_at_one_base_moves_on_to_the_next() -> None:
    read = device(register_map(0, [(1, 65)]))

    def flaky(address: int, count: int) -> Sequence[int]:
        if address == 40000:
            raise DeviceTimeout("no answer")
        return read(address, count)

    assert walk(flaky).base == 0


def test_vendor_and_unknown_standard_models_are_kept() -> None:
    result = walk(device(register_map(40000, [(1, 66), (64122, 45), (999, 4), (103, 50)])))
    assert [m.model_id for m in result.models] == [1, 64122, 999, 103]
    assert result.warnings == ("model 999 at 40117 has no pysunspec2 definition; kept undecoded",)


def test_missing_next_model_id_ends_the_walk_with_a_warning() -> None:
    result = walk(device(register_map(40000, [(1, 66), (103, 50)], tail=())))
    assert [m.model_id for m in result.models] == [1, 103]
    assert result.warnings == (
        "no model ID at 40122 after model 103 (Modbus exception 2 (ILLEGAL DATA ADDRESS) on "
        "read 1 at 40122); the map is cut off there, taking it as the end",
    )


def test_end_model_without_length_register_ends_the_walk_with_a_warning() -> None:
    result = walk(device(register_map(40000, [(1, 65)], tail=(0xFFFF,))))
    assert [m.model_id for m in result.models] == [1]
    assert result.warnings == (
        "end model at 40069 has no length register (Modbus exception 2 (ILLEGAL DATA ADDRESS) "
        "on read 1 at 40070); ignored",
    )


def test_end_model_with_a_nonzero_length_is_a_warning() -> None:
    result = walk(device(register_map(40000, [(1, 65)], tail=(0xFFFF, 7))))
    assert result.warnings == ("end model at 40069 has length 7, not 0",)


def test_model_without_length_register_is_an_error() -> None:
    registers = register_map(40000, [(1, 66)], tail=(103,))
    with pytest.raises(DeviceProtocolError, match=r"at model 103, address 40070 .*exception 2"):
        walk(device(registers))


def test_nothing_after_the_marker_is_an_error() -> None:
    with pytest.raises(DeviceProtocolError, match="no model after the SunS marker, at 40002"):
        walk(device({40000: SUNS[0], 40001: SUNS[1]}))


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([(1, 66), (0, 10)], "model ID 0 at 40070 is not a SunSpec model ID"),
        ([(1, 66), (0x5375, 10)], "model ID 21365 at 40070 is not a SunSpec model ID"),
        ([(1, 66), (103, 30000)], "model 103 at 40070 has length 30000, running past register"),
    ],
)
def test_garbage_in_the_model_chain_is_a_protocol_error(
    models: list[tuple[int, int]], message: str
) -> None:
    registers = register_map(40000, models[:1])
    registers.update({40070: models[1][0], 40071: models[1][1]})
    with pytest.raises(DeviceProtocolError, match=message):
        walk(device(registers))


def test_too_many_models_is_a_protocol_error() -> None:
    registers = register_map(40000, [(1, 66)] + [(64001, 0)] * 5)
    assert len(walk(device(registers), Discovery(max_models=6)).models) == 6
    with pytest.raises(DeviceProtocolError, match="more than 5 models; stopped at 40078"):
        walk(device(registers), Discovery(max_models=5))


def test_transport_error_mid_walk_propagates_and_the_walk_is_over() -> None:
    discovery = Discovery()
    discovery.receive(SUNS)
    lost = DeviceTimeout("no answer")
    with pytest.raises(DeviceTimeout) as caught:
        discovery.receive_error(lost)
    assert caught.value is lost
    with pytest.raises(RuntimeError, match="discovery failed"):
        discovery.next_request()


def test_answer_of_the_wrong_size_is_a_protocol_error() -> None:
    discovery = Discovery()
    with pytest.raises(DeviceProtocolError, match="asked for 2 registers at 40000, got 1"):
        discovery.receive([0x5375])
    with pytest.raises(RuntimeError):
        discovery.receive(SUNS)


def test_feeding_a_finished_discovery_is_a_programming_error() -> None:
    discovery = Discovery(bases=(0,))
    for registers in (SUNS, [1], [65], [0xFFFF], [0]):
        discovery.receive(registers)
    assert isinstance(discovery.next_request(), DiscoveryResult)
    with pytest.raises(RuntimeError, match="discovery is done"):
        discovery.receive([0])
    with pytest.raises(RuntimeError, match="discovery is done"):
        discovery.receive_error(DeviceException(2, "read"))


def test_discover_performs_the_reads() -> None:
    read = device(register_map(40000, [(1, 66), (701, 153)]))

    async def async_read(address: int, count: int) -> Sequence[int]:
        return read(address, count)

    result = asyncio.run(discover(async_read))

    assert result == DiscoveryResult(
        40000, (ModelHeader(1, 40002, 66), ModelHeader(701, 40070, 153)), ()
    )


def test_discover_lets_transport_errors_through() -> None:
    read = device(register_map(40000, [(1, 66), (701, 153)]))

    async def dropping(address: int, count: int) -> Sequence[int]:
        if address > 40002:
            raise DeviceTimeout("link down")
        return read(address, count)

    with pytest.raises(DeviceTimeout, match="link down"):
        asyncio.run(discover(dropping))


@pytest.mark.parametrize(
    "error",
    [
        DeviceException(4, "read"),  # a device failing for a moment
        DeviceException(6, "read"),  # busy
        DeviceException(11, "read"),  # the TCP gateway's target did not answer
        DeviceProtocolError("read 1 registers at 40070: got 0 registers"),  # a garbled answer
    ],
    ids=["failure", "busy", "gateway-target", "garbled"],
)
def test_a_passing_fault_mid_walk_fails_the_walk_instead_of_cutting_the_chain(
    error: DeviceError,
) -> None:
    read = device(register_map(40000, [(1, 66), (103, 50), (123, 24)]))

    def faulty(address: int, count: int) -> Sequence[int]:
        if address == 40070:
            raise error
        return read(address, count)

    with pytest.raises(type(error)):
        walk(faulty)
