"""The recorded samples as numpy columns, one time-ordered series per device: built once per
judgement, so that a day of 1 s samples for ten devices is judged in array operations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from hil.judge.specs import Signal
    from hil.records import Event, Sample

Floats = npt.NDArray[np.float64]


class NoData(Exception):
    """A test's window holds no sample to judge: the test fails, never passes vacuously."""


@dataclass(frozen=True, slots=True)
class Series:
    """One device's samples in time order; a missing value (None) is NaN."""

    device: str
    bus: str | None
    t_s: Floats
    columns: dict[str, Floats]

    def signal(self, name: Signal) -> Floats:
        """The column of that signal."""
        return self.columns[name]

    def window(self, from_s: float, to_s: float | None) -> slice:
        """The samples with from_s <= t_s <= to_s (to_s None: to the end)."""
        start = int(np.searchsorted(self.t_s, from_s, side="left"))
        stop = len(self.t_s) if to_s is None else int(np.searchsorted(self.t_s, to_s, "right"))
        return slice(start, stop)

    def where(self) -> str:
        """The device and its bus, for a detail: "inv6 (bus R18)"."""
        return self.device if self.bus is None else f"{self.device} (bus {self.bus})"


_COLUMNS: tuple[Signal, ...] = ("v_pu", "p_w", "q_var", "soc_pct")


class Columns:
    """Every device's series, made from the recording's samples on first use of a device."""

    def __init__(self, samples: list[Sample]) -> None:
        self._samples = samples
        self._series: dict[str, Series] | None = None

    def _build(self) -> dict[str, Series]:
        samples = self._samples
        n = len(samples)
        codes: dict[str, int] = {}
        device = np.fromiter((codes.setdefault(s.device, len(codes)) for s in samples), np.int64, n)
        t_s = np.fromiter((s.t_s for s in samples), np.float64, n)
        values = {
            name: np.array([getattr(s, name) for s in samples], dtype=np.float64)
            for name in _COLUMNS
        }
        order = np.lexsort((t_s, device))
        bounds = np.searchsorted(device[order], np.arange(len(codes) + 1))
        series = {}
        for name, code in codes.items():
            rows = order[bounds[code] : bounds[code + 1]]
            series[name] = Series(
                device=name,
                bus=samples[int(rows[-1])].bus,
                t_s=t_s[rows],
                columns={column: values[column][rows] for column in _COLUMNS},
            )
        return series

    def all(self) -> dict[str, Series]:
        """Every device's series, by device id."""
        if self._series is None:
            self._series = self._build()
        return self._series

    def of(self, device: str) -> Series:
        """One device's series; NoData if the recording has no sample of it."""
        try:
            return self.all()[device]
        except KeyError:
            raise NoData(f"no sample of device {device!r} in the recording") from None


@dataclass(frozen=True, slots=True)
class Run:
    """What the judge reads of a recording."""

    columns: Columns
    events: list[Event]
    telemetry: dict[str, list[float]]
    seqs: list[int] = field(default_factory=list)
    """The seq of every telemetry message received."""

    def end_s(self) -> float:
        """The last sample time of the run, s (0 without samples)."""
        return max((float(s.t_s[-1]) for s in self.columns.all().values()), default=0.0)


def rolling_range(t_s: Floats, values: Floats, span_s: float) -> Floats:
    """At each sample i, max - min of values over the samples in [t_i - span_s, t_i]; inf
    where that span holds a NaN or reaches before the first sample.

    A sparse table of maxima and minima (log2 n levels) answers every window in two lookups,
    so a day of 1 s samples costs milliseconds, whatever span_s is.
    """
    n = len(values)
    start = np.searchsorted(t_s, t_s - span_s, side="left")
    length = np.arange(n) - start + 1
    highs = [np.where(np.isnan(values), np.inf, values)]
    lows = [np.where(np.isnan(values), -np.inf, values)]
    while 2 ** len(highs) <= n:
        half = 2 ** (len(highs) - 1)
        highs.append(np.maximum(highs[-1][:-half], highs[-1][half:]))
        lows.append(np.minimum(lows[-1][:-half], lows[-1][half:]))
    level = np.floor(np.log2(length)).astype(np.int64)
    result = np.full(n, np.inf)
    for k in np.unique(level):
        rows = np.flatnonzero(level == k)
        first, last = start[rows], rows - 2**k + 1
        high = np.maximum(highs[k][first], highs[k][last])
        low = np.minimum(lows[k][first], lows[k][last])
        result[rows] = high - low
    result[t_s - span_s < t_s[0]] = np.inf
    return result
