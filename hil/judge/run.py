"""`judge(recording, tests)`: every test judged, each on its own, one result per test in the
order given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hil.judge import dynamics, gateway, site, voltage
from hil.judge.columns import Columns, NoData, Run
from hil.judge.outcome import result
from hil.judge.specs import TestSpec, unique_names
from hil.records import Recording, TestResult

_JUDGES: dict[str, Callable[[Any, Run], TestResult]] = {
    "voltage_within": voltage.voltage_within,
    "voltage_exceeds": voltage.voltage_exceeds,
    "volt_var_steady_state": voltage.volt_var_steady_state,
    "response_time": dynamics.response_time,
    "settles_to": dynamics.settles_to,
    "default_control_applied": dynamics.default_control_applied,
    "export_at_most": site.export_at_most,
    "soc_at_least": site.soc_at_least,
    "telemetry_complete": gateway.telemetry_complete,
    "every_control_answered": gateway.every_control_answered,
}


def judge(recording: Recording, tests: list[TestSpec]) -> list[TestResult]:
    """One result per test. A test with no data in its window fails, saying so; a test that
    raises on bad data fails with the error in its detail, and the others are still judged.
    ValueError if two tests share a name."""
    unique_names(tests)
    run = Run(Columns(recording.samples), recording.events, recording.telemetry, recording.seqs)
    results = []
    for test in tests:
        try:
            results.append(_JUDGES[test.kind](test, run))
        except NoData as exc:
            results.append(result(test.name, False, None, None, f"no data: {exc}"))
        except Exception as exc:  # a bad recording fails its test, never the whole report
            error = f"{type(exc).__name__}: {exc}"
            results.append(result(test.name, False, None, None, f"could not judge: {error}"))
    return results
