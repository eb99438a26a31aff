"""How a judged figure becomes a `TestResult`: the test's name, the verdict, the figures and
one sentence saying what was measured where and when."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hil.records import TestResult

if TYPE_CHECKING:
    from hil.judge.columns import Series


def result(
    test: str, passed: bool, measured: float | None, limit: float | None, detail: str
) -> TestResult:
    """The result of the test named test; numpy scalars become floats (results.json is JSON)."""
    return TestResult(
        test=test,
        passed=bool(passed),
        measured=None if measured is None else float(measured),
        limit=None if limit is None else float(limit),
        detail=detail,
    )


def at(series: Series, i: int) -> str:
    """Where and when sample i of a series was taken: "inv6 (bus R18) at t=43210.0 s"."""
    return f"{series.where()} at t={series.t_s[i]:.1f} s"


def span(from_s: float, to_s: float | None) -> str:
    """A judged window in words: "t=0.0..3600.0 s" ("t>=0.0 s" when open-ended)."""
    return f"t>={from_s:.1f} s" if to_s is None else f"t={from_s:.1f}..{to_s:.1f} s"
