"""SunSpec model layouts: where each point of a model sits, built from pysunspec2's definitions.

A layout is the register map of one model instance as a device reports it: the definition's
points with their offsets (0 = the model's ID register), with repeating groups expanded. Legacy
repeating groups (``count: 0``, e.g. 126, 132, 160) repeat as often as the reported length L
allows; 7xx groups take their count from a count point (``NCrv``, ``NPt``...) read from the
model's registers. Points that do not fit in the L + 2 registers the device reports are left out.

Layouts are interned: ``build_layout`` returns the same object for the same model id, length and
counts, so a layout compares by identity and the codec can cache work per layout.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import sunspec2
import sunspec2.mb

from derms_edge.errors import DeviceProtocolError

PointValue = int | float | str | None

_MODEL_DEFS_DIR = Path(sunspec2.__file__).parent / "models" / "json"
_MAX_ADDRESSES = 0x10000
# Model 1 may be 65 registers long: pysunspec2 accepts it by dropping the final Pad point.
_COMMON_MODEL_ID = 1
_COMMON_SHORT_LENGTH = 65


@dataclass(frozen=True, slots=True)
class PointDef:
    """One point of a model instance: its path, SunSpec type, place and scale factor."""

    path: str
    name: str
    type: str
    offset: int
    size: int
    sf: str | int | None
    access: str
    mandatory: bool
    units: str | None
    symbols: Mapping[str, int]


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class ModelLayout:
    """The register layout of one model instance as a device reports it."""

    model_id: int
    name: str
    length: int
    defined_length: int
    points: Mapping[str, PointDef]
    mismatch: str | None

    def point(self, path: str) -> PointDef:
        """Return the point at ``path``; KeyError naming the model and path if there is none."""
        try:
            return self.points[path]
        except KeyError:
            raise KeyError(f"model {self.model_id} ({self.name}) has no point {path!r}") from None


@functools.cache
def model_definition(model_id: int) -> Mapping[str, Any] | None:
    """Return pysunspec2's JSON definition of a model, or None if it has none (cached)."""
    # Read the package's own JSON: sunspec2.device.get_model_def searches the working directory
    # first, so a stray model_<id>.json there would silently replace the real definition.
    path = _MODEL_DEFS_DIR / f"model_{model_id}.json"
    if not path.is_file():
        return None
    definition: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return MappingProxyType(definition)


def build_layout(
    model_id: int, length: int, registers: Sequence[int] | None = None
) -> ModelLayout | None:
    """Lay out a model of reported length L; 7xx count points are read from ``registers``.

    DeviceProtocolError when the device's registers make no layout (a count point missing
    from them, not implemented, or counting more registers than a device has)."""
    definition = model_definition(model_id)
    if definition is None:
        return None
    counts = _read_counts(model_id, definition["group"], registers)
    return _build(model_id, length, counts)


def _read_counts(
    model_id: int, group: Mapping[str, Any], registers: Sequence[int] | None
) -> tuple[tuple[str, int], ...]:
    """Read the count points the definition's groups refer to (all are top-level points)."""
    names = _count_point_names(group)
    if not names:
        return ()
    offsets = _top_level_offsets(group)
    counts = []
    for name in sorted(names):
        if name not in offsets:
            raise ValueError(f"model {model_id}: count point {name} is not a top-level point")
        offset = offsets[name]
        if registers is None:
            raise ValueError(f"model {model_id}: need its registers to read count point {name}")
        if len(registers) <= offset:
            raise DeviceProtocolError(
                f"model {model_id}: need its registers up to offset {offset} to read count point "
                f"{name}, got {len(registers)} registers (is its length L too short?)"
            )
        value = registers[offset]
        if value == sunspec2.mb.SUNS_UNIMPL_UINT16:
            raise DeviceProtocolError(
                f"model {model_id}: count point {name} is not implemented (0xFFFF)"
            )
        counts.append((name, value))
    return tuple(counts)


def _count_point_names(group: Mapping[str, Any]) -> set[str]:
    """Names of the points used as repeating-group counts anywhere in a group definition."""
    names: set[str] = set()
    for sub in group.get("groups", ()):
        count = sub.get("count")
        if isinstance(count, str):
            names.add(count)
        names |= _count_point_names(sub)
    return names


def _top_level_offsets(group: Mapping[str, Any]) -> dict[str, int]:
    """Offsets of a definition's top-level points, which precede all groups."""
    offsets = {}
    offset = 0
    for pdef in group.get("points", ()):
        offsets[pdef["name"]] = offset
        offset += _point_size(pdef)
    return offsets


def _point_size(pdef: Mapping[str, Any]) -> int:
    """Registers a point occupies: its ``size`` if given, else its type's length."""
    size = pdef.get("size")
    if size is not None:
        return int(size)
    info = sunspec2.mb.point_type_info.get(pdef["type"])
    if info is None:
        raise ValueError(f"point {pdef['name']} has unknown SunSpec type {pdef['type']!r}")
    return int(info.len)


@functools.cache
def _build(model_id: int, length: int, counts: tuple[tuple[str, int], ...]) -> ModelLayout:
    """Build (once) the layout for a model id, reported length and count-point values."""
    definition = model_definition(model_id)
    assert definition is not None  # build_layout checked
    top = definition["group"]
    builder = _Builder(model_id, length, dict(counts))
    end = builder.group(top, prefix="", scopes=(), start=0)
    defined_length = end - 2
    mismatch = None
    if length < defined_length:
        mismatch = (
            f"model {model_id}: device reports length {length}, definition says "
            f"{defined_length}; decoding the {length} registers present"
        )
    elif length > defined_length:
        mismatch = (
            f"model {model_id}: device reports length {length}, definition says "
            f"{defined_length}; ignoring the {length - defined_length} registers past it"
        )
    return ModelLayout(
        model_id=model_id,
        name=top["name"],
        length=length,
        defined_length=defined_length,
        points=MappingProxyType(builder.points),
        mismatch=mismatch,
    )


class _Builder:
    """Walks a definition, laying out points and expanding repeating groups."""

    def __init__(self, model_id: int, length: int, counts: Mapping[str, int]) -> None:
        self.model_id = model_id
        self.length = length
        self.limit = length + 2  # registers the device says the model has, ID and L included
        self.counts = counts
        self.points: dict[str, PointDef] = {}

    def group(
        self,
        gdef: Mapping[str, Any],
        prefix: str,
        scopes: tuple[Mapping[str, str], ...],
        start: int,
    ) -> int:
        """Lay out one group instance at ``start``; return the offset just past it."""
        pdefs = [p for p in gdef.get("points", ()) if not self._dropped(p, start)]
        scope = {p["name"]: prefix + p["name"] for p in pdefs}
        scopes = (scope, *scopes)
        offset = start
        for pdef in pdefs:
            size = _point_size(pdef)
            if offset + size <= self.limit:
                self._add(pdef, prefix, scopes, offset, size)
            offset += size
        for sub in gdef.get("groups", ()):
            offset = self._subgroup(sub, prefix, scopes, offset)
        return offset

    def _subgroup(
        self,
        gdef: Mapping[str, Any],
        prefix: str,
        scopes: tuple[Mapping[str, str], ...],
        start: int,
    ) -> int:
        """Lay out a nested group (repeating or not); return the offset just past it."""
        name = gdef["name"]
        count = gdef.get("count")
        if count is None:
            return self.group(gdef, f"{prefix}{name}.", scopes, start)
        instance_length = self._length(gdef)
        if instance_length == 0:
            raise ValueError(f"model {self.model_id}: repeating group {name} has length 0")
        repeat = self._repeat(count, (self.limit - start) // instance_length)
        offset = start
        for index in range(repeat):
            if offset >= self.limit:  # the rest lies past the reported length: only count it
                return offset + (repeat - index) * instance_length
            offset = self.group(gdef, f"{prefix}{name}[{index}].", scopes, offset)
        return offset

    def _repeat(self, count: int | str, fitting: int | None) -> int:
        """How many times a repeating group occurs; ``fitting``: how many fit in the model's L."""
        if isinstance(count, str):
            return self.counts[count]
        if count != 0:
            return count
        if fitting is None:
            raise ValueError(f"model {self.model_id}: nested legacy repeating group (count 0)")
        return max(0, fitting)  # legacy: as many as fit in the reported length

    def _length(self, gdef: Mapping[str, Any]) -> int:
        """Registers one instance of a group occupies, nested repeating groups included."""
        total = sum(_point_size(p) for p in gdef.get("points", ()))
        for sub in gdef.get("groups", ()):
            count = sub.get("count")
            repeat = 1 if count is None else self._repeat(count, None)
            total += repeat * self._length(sub)
        if total >= _MAX_ADDRESSES:
            raise DeviceProtocolError(
                f"model {self.model_id}: group {gdef['name']} would span {total} registers "
                f"(counts {dict(self.counts)}), more than a Modbus device has"
            )
        return total

    def _dropped(self, pdef: Mapping[str, Any], start: int) -> bool:
        """True for model 1's Pad when the device reports the legacy length 65."""
        return (
            self.model_id == _COMMON_MODEL_ID
            and self.length == _COMMON_SHORT_LENGTH
            and start == 0
            and pdef["type"] == "pad"
        )

    def _add(
        self,
        pdef: Mapping[str, Any],
        prefix: str,
        scopes: tuple[Mapping[str, str], ...],
        offset: int,
        size: int,
    ) -> None:
        """Record one point."""
        path = prefix + pdef["name"]
        self.points[path] = PointDef(
            path=path,
            name=pdef["name"],
            type=pdef["type"],
            offset=offset,
            size=size,
            sf=self._scale_factor(pdef, scopes),
            access="RW" if pdef.get("access") == "RW" else "R",
            mandatory=pdef.get("mandatory") == "M",
            units=pdef.get("units"),
            symbols=MappingProxyType({s["name"]: int(s["value"]) for s in pdef.get("symbols", ())}),
        )

    def _scale_factor(
        self, pdef: Mapping[str, Any], scopes: tuple[Mapping[str, str], ...]
    ) -> str | int | None:
        """Resolve a point's ``sf``: a fixed exponent, or the path of the sunssf point it names."""
        sf = pdef.get("sf")
        if sf is None or isinstance(sf, int):
            return sf
        for scope in scopes:  # innermost group first, outward to the model, as pysunspec2 does
            if sf in scope:
                return scope[sf]
        raise ValueError(f"model {self.model_id}: scale factor {sf} of {pdef['name']} not defined")
