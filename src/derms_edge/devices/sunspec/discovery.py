"""SunSpec model discovery as a sans-I/O, table-driven state machine.

The walk SunSpec specifies (and pysunspec2's ``scan`` performs): find the ``SunS`` marker at the
first base address that has it (40000, 0, 50000), then read each model's ID and its length L as
separate requests (some devices do not answer the L of the end model), stepping L + 2 registers
to the next model, until the end model ID 0xFFFF. ``Discovery`` only says which registers it needs
(``NeedRegisters``) and is fed the answers; ``discover`` is the small loop that does the reads.

    SEARCH_MARKER --marker--> READ_MODEL_ID --id--> READ_MODEL_LENGTH --length--> READ_MODEL_ID
          |  ^                  |       |
          +--+ no marker        |       +--end id (0xFFFF)--> READ_END_LENGTH --length/none--> DONE
     (next base, or ERROR)      +--no register (the map is cut off)--> DONE, with a warning

Transitions live in ``_TRANSITIONS``: an event a state has no entry for is an ERROR; the special
cases (no base left, garbage IDs or lengths) are explicit code that enters ERROR. Unlike pysunspec2
we also read the end model's L, which is how a map cut off after its end ID (Fronius Eco) shows.
A device refusing a read (Modbus exception 1-3) is an event. Any other failure (timeout, lost
link, a busy or failing device's exception 4-6, 10, 11, a garbled answer) is one only while
searching for the marker; later it puts the walk in ERROR and propagates, so the caller can retry
the whole discovery instead of taking a chain cut short by a passing fault.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import sunspec2.mb

from derms_edge.config import SUNSPEC_BASES
from derms_edge.devices.sunspec.models import model_definition
from derms_edge.errors import (
    ConnectionLost,
    DeviceError,
    DeviceException,
    DeviceProtocolError,
    TransportError,
)

SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = sunspec2.mb.SUNS_END_MODEL_ID
_ADDRESS_LIMIT = 0x10000
_STANDARD_IDS = range(1, 1000)  # SunSpec's assigned model ranges; test and vendor models follow
_TEST_AND_VENDOR_IDS = range(63000, END_MODEL_ID)


@dataclass(frozen=True, slots=True)
class NeedRegisters:
    """Read ``count`` holding registers from ``address`` and pass them to ``receive``."""

    address: int
    count: int


@dataclass(frozen=True, slots=True)
class ModelHeader:
    """One model found on the device: its ID, the address of its ID register, and its L."""

    model_id: int
    address: int
    length: int


@dataclass(frozen=True, slots=True)
class DiscoveryResult:
    """Where the SunSpec map starts, the models in it (end model excluded) and any warnings."""

    base: int
    models: tuple[ModelHeader, ...]
    warnings: tuple[str, ...]


class _State(enum.Enum):
    SEARCH_MARKER = "search marker"
    READ_MODEL_ID = "read model id"
    READ_MODEL_LENGTH = "read model length"
    READ_END_LENGTH = "read end model length"
    DONE = "done"
    ERROR = "error"


class _Event(enum.Enum):
    MARKER = "marker found"
    NO_MARKER = "no marker"
    MODEL_ID = "model id"
    END_ID = "end model id"
    LENGTH = "length"
    NO_REGISTER = "device refused the read"


_S, _E = _State, _Event
_TRANSITIONS: dict[_State, dict[_Event, _State]] = {
    _S.SEARCH_MARKER: {
        _E.MARKER: _S.READ_MODEL_ID,
        _E.NO_MARKER: _S.SEARCH_MARKER,
        _E.NO_REGISTER: _S.SEARCH_MARKER,
    },
    _S.READ_MODEL_ID: {
        _E.MODEL_ID: _S.READ_MODEL_LENGTH,
        _E.END_ID: _S.READ_END_LENGTH,
        _E.NO_REGISTER: _S.DONE,
    },
    _S.READ_MODEL_LENGTH: {_E.LENGTH: _S.READ_MODEL_ID},
    _S.READ_END_LENGTH: {_E.LENGTH: _S.DONE, _E.NO_REGISTER: _S.DONE},
    _S.DONE: {},
    _S.ERROR: {},
}


class Discovery:
    """Walks a device's SunSpec model list; you perform the reads it asks for."""

    def __init__(self, bases: Sequence[int] = SUNSPEC_BASES, max_models: int = 100) -> None:
        """Prepare a walk that tries ``bases`` in order and accepts at most ``max_models``."""
        if not bases:
            raise ValueError("need at least one base address")
        self._bases = tuple(bases)
        self._max_models = max_models
        self._state = _State.SEARCH_MARKER
        self._base_index = 0
        self._address = self._bases[0]  # of the marker, or of the current model's ID register
        self._model_id = 0
        self._models: list[ModelHeader] = []
        self._warnings: list[str] = []
        self._misses: list[str] = []  # why each base failed
        self._transport_failures = 0

    def next_request(self) -> NeedRegisters | DiscoveryResult:
        """Return the next read to perform, or the result once the walk is done."""
        state = self._state
        if state is _State.SEARCH_MARKER:
            return NeedRegisters(self._address, len(SUNS_MARKER))
        if state is _State.READ_MODEL_ID:
            return NeedRegisters(self._address, 1)
        if state in (_State.READ_MODEL_LENGTH, _State.READ_END_LENGTH):
            return NeedRegisters(self._address + 1, 1)
        if state is _State.DONE:
            return DiscoveryResult(
                self._bases[self._base_index], tuple(self._models), tuple(self._warnings)
            )
        raise RuntimeError("discovery failed; start a new Discovery")

    def receive(self, registers: Sequence[int]) -> None:
        """Feed the registers read for the outstanding request."""
        request = self._outstanding()
        if len(registers) != request.count:
            self._fail(
                f"asked for {request.count} registers at {request.address}, got {len(registers)}"
            )
        state = self._state
        if state is _State.SEARCH_MARKER:
            event = self._on_marker(registers)
        elif state is _State.READ_MODEL_ID:
            event = self._on_model_id(registers[0])
        elif state is _State.READ_MODEL_LENGTH:
            event = self._on_model_length(registers[0])
        else:
            event = self._on_end_length(registers[0])
        self._transition(event)

    def receive_error(self, error: DeviceError) -> None:
        """Feed the error the outstanding request failed with (re-raised if it is not the map's)."""
        request = self._outstanding()
        state = self._state
        if isinstance(error, ConnectionLost):  # the link is down: no base can answer
            self._state = _State.ERROR
            raise error
        if state is _State.SEARCH_MARKER:
            self._misses.append(f"{request.address}: {error}")
            self._transport_failures += isinstance(error, TransportError)
            self._next_base()
        elif not isinstance(error, DeviceException) or error.retryable:
            # only a refused address (exception 1-3) ends the map: a device that is busy or
            # failing, or a garbled answer, would cut the chain short by accident
            self._state = _State.ERROR
            raise error
        elif state is _State.READ_MODEL_ID:
            if not self._models:
                self._fail(f"no model after the SunS marker, at {request.address} ({error})")
            self._warnings.append(
                f"no model ID at {request.address} after model {self._models[-1].model_id} "
                f"({error}); the map is cut off there, taking it as the end"
            )
        elif state is _State.READ_END_LENGTH:
            self._warnings.append(
                f"end model at {self._address} has no length register ({error}); ignored"
            )
        self._transition(_Event.NO_REGISTER, f" ({error})")

    def _outstanding(self) -> NeedRegisters:
        """The request awaiting an answer; misuse after the walk ended is a RuntimeError."""
        request = self.next_request()
        if not isinstance(request, NeedRegisters):
            raise RuntimeError("discovery is done; nothing was requested")
        return request

    def _on_marker(self, registers: Sequence[int]) -> _Event:
        """Classify the two registers read at a base address."""
        if tuple(registers) == SUNS_MARKER:
            self._address += len(SUNS_MARKER)
            return _Event.MARKER
        found = " ".join(f"0x{r:04X}" for r in registers)
        self._misses.append(f"{self._address}: found {found}")
        self._next_base()
        return _Event.NO_MARKER

    def _on_model_id(self, model_id: int) -> _Event:
        """Classify a model ID register; garbage IDs are a protocol error."""
        if model_id == END_MODEL_ID:
            return _Event.END_ID
        if model_id not in _STANDARD_IDS and model_id not in _TEST_AND_VENDOR_IDS:
            self._fail(
                f"model ID {model_id} at {self._address} is not a SunSpec model ID "
                "(1-999 standard, 63000-65534 test and vendor); the model chain is broken"
            )
        if len(self._models) >= self._max_models:
            self._fail(f"more than {self._max_models} models; stopped at {self._address}")
        if model_id in _STANDARD_IDS and model_definition(model_id) is None:
            self._warnings.append(
                f"model {model_id} at {self._address} has no pysunspec2 definition; kept undecoded"
            )
        self._model_id = model_id
        return _Event.MODEL_ID

    def _on_model_length(self, length: int) -> _Event:
        """Record a model and step to the next one's ID register."""
        following = self._address + 2 + length
        if following >= _ADDRESS_LIMIT:
            self._fail(
                f"model {self._model_id} at {self._address} has length {length}, "
                f"running past register 65535"
            )
        self._models.append(ModelHeader(self._model_id, self._address, length))
        self._address = following
        return _Event.LENGTH

    def _on_end_length(self, length: int) -> _Event:
        """Check the end model's length, which SunSpec says is 0."""
        if length != 0:
            self._warnings.append(f"end model at {self._address} has length {length}, not 0")
        return _Event.LENGTH

    def _next_base(self) -> None:
        """Move on to the next base address, failing once none is left."""
        if self._base_index + 1 >= len(self._bases):
            self._state = _State.ERROR
            bases = ", ".join(str(b) for b in self._bases[:-1]) + f" or {self._bases[-1]}"
            if len(self._bases) == 1:
                bases = str(self._bases[0])
            message = f"no SunS marker at {bases} ({'; '.join(self._misses)})"
            if self._transport_failures == len(self._bases):
                raise TransportError(message)
            raise DeviceProtocolError(message)
        self._base_index += 1
        self._address = self._bases[self._base_index]

    def _transition(self, event: _Event, detail: str = "") -> None:
        """Apply the transition table; an event the current state does not expect is an error."""
        following = _TRANSITIONS[self._state].get(event)
        if following is None:
            self._fail(
                f"{event.value} in state {self._state.value!r} at model {self._model_id}, "
                f"address {self._address}{detail}"
            )
        self._state = following

    def _fail(self, message: str) -> NoReturn:
        """Enter ERROR and raise the device's protocol error."""
        self._state = _State.ERROR
        raise DeviceProtocolError(message)


async def discover(
    read: Callable[[int, int], Awaitable[Sequence[int]]],
    bases: Sequence[int] = SUNSPEC_BASES,
) -> DiscoveryResult:
    """Walk a device's SunSpec models, calling ``read(address, count)`` for each request."""
    discovery = Discovery(bases)
    while True:
        step = discovery.next_request()
        if isinstance(step, DiscoveryResult):
            return step
        try:
            registers = await read(step.address, step.count)
        except DeviceError as error:
            discovery.receive_error(error)
        else:
            discovery.receive(registers)
