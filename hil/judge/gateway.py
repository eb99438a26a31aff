"""Tests of what the gateway says: no telemetry lost, and every control answered."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from hil.judge.columns import NoData, Run
from hil.judge.outcome import result, span

if TYPE_CHECKING:
    from hil.judge.specs import EveryControlAnswered, TelemetryComplete
    from hil.records import Event, TestResult


def telemetry_complete(spec: TelemetryComplete, run: Run) -> TestResult:
    """Each device's telemetry ts cover [from_s, to_s] with no gap above max_gap_s (the
    window's ends count as edges), and no seq is missing between the first and the last
    received (a gap in ts can be a late round; a gap in seq is loss); measured: the largest
    gap of any device."""
    to_s = run.end_s() if spec.to_s is None else spec.to_s
    where = span(spec.from_s, to_s)
    devices = sorted(run.telemetry) if spec.devices is None else spec.devices
    if not devices or to_s <= spec.from_s:
        raise NoData(f"no telemetry to judge in {where}")
    max_gap_s = 2.5 * spec.period_s if spec.max_gap_s is None else spec.max_gap_s
    worst: tuple[float, str, float, float] | None = None  # (gap, device, from, to)
    messages = 0
    for device in devices:
        ts = np.sort(np.asarray(run.telemetry.get(device, []), dtype=np.float64))
        ts = ts[(ts >= spec.from_s) & (ts <= to_s)]
        messages += len(ts)
        edges = np.concatenate(([spec.from_s], ts, [to_s]))
        k = int(np.argmax(np.diff(edges)))
        gap = float(edges[k + 1] - edges[k])
        if worst is None or gap > worst[0]:
            worst = (gap, device, float(edges[k]), float(edges[k + 1]))
    assert worst is not None
    gap, device, start, end = worst
    seqs = set(run.seqs)
    missing = max(seqs) - min(seqs) + 1 - len(seqs) if seqs else 0
    return result(
        spec.name,
        gap <= max_gap_s and missing == 0,
        gap,
        max_gap_s,
        f"largest gap {gap:.2f} s at {device} from t={start:.2f} s to t={end:.2f} s "
        f"({len(devices)} devices, {messages} messages every {spec.period_s:g} s in {where}); "
        f"{missing} seq missing of {len(seqs)} received",
    )


def _unanswered(sent: Event, answers: list[Event], spec: EveryControlAnswered) -> str | None:
    """Why a sent control is not answered as it must be; None if it is."""
    later = [r for r in answers if r.t_s >= sent.t_s]
    if not later:
        return f"{sent.mrid} (sent t={sent.t_s:.1f} s): no response"
    delay = later[0].t_s - sent.t_s
    if delay > spec.within_s:
        return f"{sent.mrid} (sent t={sent.t_s:.1f} s): first response {delay:.1f} s later"
    if not any(r.status in spec.final_statuses for r in later):
        return f"{sent.mrid} (sent t={sent.t_s:.1f} s): no final status (last {later[-1].status})"
    return None


def every_control_answered(spec: EveryControlAnswered, run: Run) -> TestResult:
    """Every sent control with an mrid answered in time and ended; measured: how many not."""
    to_s = np.inf if spec.to_s is None else spec.to_s
    where = span(spec.from_s, spec.to_s)
    window = [e for e in run.events if e.kind == "sent" and spec.from_s <= e.t_s <= to_s]
    sent = [e for e in window if e.mrid is not None]
    if not sent:
        raise NoData(f"no control with an mrid sent in {where}")
    answers: dict[str, list[Event]] = defaultdict(list)
    for e in sorted(run.events, key=lambda e: e.t_s):
        if e.kind == "response" and e.mrid is not None:
            answers[e.mrid].append(e)
    failures = [
        why for e in sent if (why := _unanswered(e, answers[e.mrid or ""], spec)) is not None
    ]
    skipped = len(window) - len(sent)
    summary = (
        f"{len(failures)} of {len(sent)} controls sent in {where} not answered in "
        f"{spec.within_s:g} s with a final status"
    )
    if skipped:
        summary += f" ({skipped} sent without an mrid not judged)"
    return result(
        spec.name,
        not failures,
        len(failures),
        0,
        summary + (": " + "; ".join(failures) if failures else ""),
    )
