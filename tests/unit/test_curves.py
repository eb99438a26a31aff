"""Volt-var curves (IEEE 1547-2018 categories A and B), the response filter, edge volt-var."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from derms_edge.control.volt_var import (
    EdgeVoltVar,
    ResponseFilter,
    interpolate,
    volt_var,
)
from derms_edge.model import CATEGORY_CURVES, VoltVarCurve

CAT_A, CAT_B = CATEGORY_CURVES["cat_a"], CATEGORY_CURVES["cat_b"]


@pytest.mark.parametrize(
    ("v_pu", "q_pct"),
    [
        (0.80, 44.0),  # flat below V1
        (0.92, 44.0),
        (0.95, 22.0),
        (0.98, 0.0),  # deadband V2..V3
        (1.00, 0.0),
        (1.02, 0.0),
        (1.05, -22.0),
        (1.08, -44.0),
        (1.20, -44.0),  # flat above V4
    ],
)
def test_category_b_shape(v_pu: float, q_pct: float) -> None:
    assert volt_var(v_pu, CAT_B) == pytest.approx(q_pct)


@pytest.mark.parametrize(
    ("v_pu", "q_pct"),
    [(0.85, 25.0), (0.90, 25.0), (0.95, 12.5), (1.00, 0.0), (1.05, -12.5), (1.10, -25.0)],
)
def test_category_a_shape(v_pu: float, q_pct: float) -> None:
    assert volt_var(v_pu, CAT_A) == pytest.approx(q_pct)


def test_category_a_has_no_deadband_v2_equals_v3() -> None:
    v2, v3 = CAT_A.points[1][0], CAT_A.points[2][0]
    assert v2 == v3 == CAT_A.v_ref_pu
    assert volt_var(1.0, CAT_A) == 0.0
    assert volt_var(1.0 - 1e-6, CAT_A) == pytest.approx(25.0e-6 / 0.1)  # slope 250 %/pu
    assert volt_var(1.0 + 1e-6, CAT_A) == pytest.approx(-25.0e-6 / 0.1)


def test_a_vertical_segment_takes_the_first_points_value_at_its_voltage() -> None:
    step = ((0.95, 10.0), (1.0, 10.0), (1.0, -10.0), (1.05, -10.0))
    assert interpolate(1.0, step) == 10.0
    assert interpolate(1.0 + 1e-9, step) == -10.0


def test_vref_shifts_the_curve() -> None:
    shifted = replace(CAT_B, v_ref_pu=1.03)
    for v_pu in (0.90, 0.95, 1.00, 1.05, 1.10):
        assert volt_var(v_pu + 0.03, shifted) == pytest.approx(volt_var(v_pu, CAT_B))
    assert volt_var(1.03, replace(CAT_A, v_ref_pu=1.03)) == 0.0


def time_to_90_pct(response_time_s: float, dt_s: float) -> float:
    """Seconds from the first sample that sees a unit step to the first at 90 % or more."""
    response = ResponseFilter(response_time_s)
    response.update(0.0, dt_s)
    k = 0
    while response.update(1.0, dt_s) < 0.9:
        k += 1
    return k * dt_s


@pytest.mark.parametrize("dt_s", [0.01, 0.1, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("response_time_s", [1.0, 5.0, 10.0, 90.0])
def test_the_filter_reaches_90_pct_at_the_response_time(
    response_time_s: float, dt_s: float
) -> None:
    t90 = time_to_90_pct(response_time_s, dt_s)
    if response_time_s < 1.15 * dt_s:  # OpenDER's bypass: faster than the step can show
        assert t90 == 0.0
        return
    # tau = OLRT / 2.3, so 90 % (ln 10 tau) comes 0.1 % after the OLRT; sampled every dt_s
    assert abs(t90 - response_time_s * math.log(10) / 2.3) <= dt_s + 1e-9


def test_the_filter_passes_through_when_faster_than_the_step() -> None:
    response = ResponseFilter(1.0)
    assert response.update(0.0, 1.0) == 0.0
    assert response.update(7.0, 1.0) == 7.0
    assert ResponseFilter(1.15).update(0.0, 1.0) == 0.0
    filtered = ResponseFilter(1.15)
    filtered.update(0.0, 1.0)
    assert 0.0 < filtered.update(7.0, 1.0) < 7.0


def test_the_filter_starts_at_its_input_and_holds_on_no_time() -> None:
    response = ResponseFilter(5.0)
    assert response.update(3.0, 0.1) == 3.0
    after = response.update(10.0, 0.1)
    assert response.update(10.0, 0.0) == after


def test_edge_volt_var_gives_var_from_the_curve_through_the_filter() -> None:
    edge = EdgeVoltVar(CAT_B, 10000.0)
    assert edge.update(1.05, 0.1) == pytest.approx(-2200.0)  # first reading: no transient
    for _ in range(600):  # 60 s: 12 response times
        q_var = edge.update(0.95, 0.1)
    assert q_var == pytest.approx(2200.0)


def test_edge_volt_var_moves_to_a_new_curve_without_a_jump() -> None:
    edge = EdgeVoltVar(CAT_B, 10000.0)
    edge.update(1.05, 1.0)
    edge.curve = VoltVarCurve(CAT_A.points, 1.0, 10.0)  # -12.5 % at 1.05 pu, slower
    first = edge.update(1.05, 1.0)
    assert -2200.0 < first < -1250.0
    assert edge.response.response_time_s == 10.0
    for _ in range(100):
        q_var = edge.update(1.05, 1.0)
    assert q_var == pytest.approx(-1250.0)
