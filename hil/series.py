"""A recording's samples as numpy columns per device or bus, and their envelope for plotting.

Plotting a day at 1 s (86,400 points a device) line by line would take matplotlib tens of
seconds and draw nothing more than a few hundred pixel columns can show; `envelope` keeps, per
column of time, the lowest and the highest value, so every excursion stays visible. The CSV
files keep every sample; only the plots are reduced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from hil.records import BusSample, Sample

Column = npt.NDArray[np.float64]

SETPOINTS = ("w_max_lim_pct", "var_pct", "pf", "storage_w", "evse_max_a")
"""The setpoint columns of a sample, in the order they are plotted."""
OPTIONAL = ("v_pu", "soc_pct", *SETPOINTS)
"""The sample columns that may be None (NaN in a column)."""


@dataclass(frozen=True, slots=True)
class Series:
    """One device's (or one bus's) samples in time order: `t_s` and a column per field, NaN
    where the sample held None."""

    name: str
    t_s: Column
    columns: dict[str, Column]

    def has(self, field: str) -> bool:
        """Whether any sample of this series holds a value of `field`."""
        column = self.columns.get(field)
        return column is not None and bool(np.any(~np.isnan(column)))


def _optional(samples: Sequence[Sample], field: str) -> Column:
    values = map(attrgetter(field), samples)
    return np.fromiter(
        (math.nan if v is None else v for v in values), dtype=np.float64, count=len(samples)
    )


def _split(
    names: list[str], t_s: Column, columns: dict[str, Column], codes: npt.NDArray[np.intp]
) -> list[Series]:
    """Cut whole-recording columns into one Series per name; `codes[i]` is row i's name's
    index. Rows keep their order within a name (a stable sort), so time stays ascending."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    series = []
    for k, name in enumerate(names):
        rows = order[bounds[k] : bounds[k + 1]]
        series.append(Series(name, t_s[rows], {f: c[rows] for f, c in columns.items()}))
    return sorted(series, key=attrgetter("name"))


def _codes(names: Sequence[str], index: dict[str, int]) -> npt.NDArray[np.intp]:
    return np.fromiter(
        (index.setdefault(n, len(index)) for n in names), dtype=np.intp, count=len(names)
    )


def device_series(samples: Sequence[Sample]) -> list[Series]:
    """Per device, sorted by device id; `samples` must be in time order."""
    index: dict[str, int] = {}
    codes = _codes([s.device for s in samples], index)
    columns = {f: _optional(samples, f) for f in OPTIONAL}
    for field in ("p_w", "q_var"):
        columns[field] = np.fromiter(
            map(attrgetter(field), samples), dtype=np.float64, count=len(samples)
        )
    t_s = np.fromiter((s.t_s for s in samples), dtype=np.float64, count=len(samples))
    return _split(list(index), t_s, columns, codes)


def bus_series(buses: Sequence[BusSample]) -> list[Series]:
    """Per bus (column ``v_pu``), sorted by bus name; `buses` must be in time order."""
    index: dict[str, int] = {}
    codes = _codes([b.bus for b in buses], index)
    t_s = np.fromiter((b.t_s for b in buses), dtype=np.float64, count=len(buses))
    v_pu = np.fromiter((b.v_pu for b in buses), dtype=np.float64, count=len(buses))
    return _split(list(index), t_s, {"v_pu": v_pu}, codes)


def envelope(t_s: Column, values: Column, columns: int) -> tuple[Column, Column]:
    """The lowest and the highest value in each of `columns` equal spans of time, as a line
    that goes from one to the other at the span's first time (NaN ignored; a span of NaN
    only stays NaN, a gap in the line). Short series come back unchanged."""
    if len(t_s) <= 2 * columns:
        return t_s, values
    starts = np.unique(np.searchsorted(t_s, np.linspace(t_s[0], t_s[-1], columns + 1)[:-1]))
    with np.errstate(invalid="ignore"):
        low = np.fmin.reduceat(values, starts)
        high = np.fmax.reduceat(values, starts)
    x = np.append(np.repeat(t_s[starts], 2), t_s[-1])
    y = np.empty(2 * len(starts) + 1)
    y[0:-1:2] = low
    y[1:-1:2] = high
    y[-1] = values[-1]
    return x, y
