"""The feeder: construction errors, voltages that move the right way, the high-PV case."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from hil.feeder import Feeder, FeederDidNotConverge, FeederSpec, load_feeder_spec

FEEDERS = Path(__file__).resolve().parents[2] / "hil" / "feeders"
PV_W = 10_000.0  # the rig's pv_1547 default rating, which cigre_lv_high_pv is sized for


@pytest.fixture(scope="module")
def high_pv() -> Feeder:
    return Feeder(load_feeder_spec(FEEDERS / "cigre_lv_high_pv.yaml"))


@pytest.fixture(scope="module")
def one_bus() -> Feeder:
    return Feeder(load_feeder_spec(FEEDERS / "one_bus.yaml"))


def midday(feeder: Feeder, q_var: float = 0.0, **changes: Any) -> dict[str, float]:
    """Full irradiance, light load, upstream 1.0 pu; PV at its rating, batteries idle."""
    injections = {
        d: (0.0, 0.0) if d.startswith("bat") else (PV_W, q_var) for d in feeder.spec.devices
    }
    inputs: dict[str, Any] = {
        "upstream_v_pu": 1.0,
        "load_scale": 0.3,
        "irradiance_pu": 1.0,
        "injections": injections,
    }
    inputs.update(changes)
    return feeder.solve(**inputs).device_v_pu


def own(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "network": "own",
        "own": {
            "buses": [{"name": "a", "vn_kv": 0.4}, {"name": "b", "vn_kv": 0.4}],
            "lines": [
                {
                    "from": "a",
                    "to": "b",
                    "length_km": 0.2,
                    "r_ohm_per_km": 0.2,
                    "x_ohm_per_km": 0.08,
                    "max_i_ka": 0.3,
                },
            ],
            "ext_grid": "a",
        },
        "devices": {"inv1": {"bus": "b"}},
    }
    spec.update(changes)
    return spec


def test_unknown_network_is_refused() -> None:
    with pytest.raises(ValidationError, match="cigre_lv"):
        FeederSpec.model_validate({"network": "ieee13", "devices": {"inv1": {"bus": "x"}}})


def test_unknown_bus_names_the_device_and_lists_the_buses() -> None:
    spec = FeederSpec.model_validate({"network": "cigre_lv", "devices": {"inv9": {"bus": "R18"}}})
    with pytest.raises(ValueError, match=r"device 'inv9': bus 'R18' .*'Bus R18'"):
        Feeder(spec)


def test_own_network_errors() -> None:
    buses = own()["own"]
    twice = {**buses, "buses": [*buses["buses"], {"name": "a", "vn_kv": 0.4}]}
    with pytest.raises(ValidationError, match=r"given twice: \['a'\]"):
        FeederSpec.model_validate(own(own=twice))
    island = {**buses, "buses": [*buses["buses"], {"name": "c", "vn_kv": 0.4}]}
    with pytest.raises(ValidationError, match=r"\['c'\] are not connected"):
        FeederSpec.model_validate(own(own=island))
    with pytest.raises(ValidationError, match="network is 'own'"):
        FeederSpec.model_validate(own(network="cigre_lv"))


def test_a_device_given_twice_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("network: cigre_lv\ndevices:\n  inv1: {bus: Bus R18}\n  inv1: {bus: Bus R11}\n")
    with pytest.raises(ValueError, match="'inv1' is given twice"):
        load_feeder_spec(path)


def test_injections_must_name_exactly_the_placed_devices(one_bus: Feeder) -> None:
    with pytest.raises(ValueError, match=r"injections name \['inv2'\]"):
        one_bus.solve(
            upstream_v_pu=1.0, load_scale=1.0, irradiance_pu=0.0, injections={"inv2": (0, 0)}
        )


def test_lv_buses_are_the_residential_feeder_in_order(high_pv: Feeder) -> None:
    assert high_pv.lv_buses == [f"Bus R{i}" for i in range(1, 19)]
    assert high_pv.bus_of("inv5") == "Bus R18"


def test_injection_raises_and_absorption_lowers_the_voltage(one_bus: Feeder) -> None:
    def house(p_w: float, q_var: float) -> float:
        return one_bus.solve(
            upstream_v_pu=1.0,
            load_scale=1.0,
            irradiance_pu=0.0,
            injections={"inv1": (p_w, q_var)},
        ).device_v_pu["inv1"]

    idle, exporting = house(0.0, 0.0), house(10_000.0, 0.0)
    assert exporting - idle == pytest.approx(0.0022, abs=0.0002)  # one_bus.yaml's comment
    assert house(10_000.0, -4_400.0) < exporting
    assert one_bus.lv_buses == ["busbar", "cabinet", "house"]


def test_upstream_voltage_lifts_every_bus(high_pv: Feeder) -> None:
    def buses(upstream_v_pu: float) -> dict[str, float]:
        idle = {d: (0.0, 0.0) for d in high_pv.spec.devices}
        return high_pv.solve(
            upstream_v_pu=upstream_v_pu, load_scale=0.3, irradiance_pu=1.0, injections=idle
        ).bus_v_pu

    low, high = buses(1.0), buses(1.03)
    assert all(high[b] > low[b] + 0.02 for b in low)


def test_scale_multiplies_the_device_at_its_bus(high_pv: Feeder) -> None:
    """inv5 (scale 4) at 2.5 kW equals one unit of 10 kW at the same bus."""
    scaled = midday(high_pv)
    spec = high_pv.spec.model_copy(
        update={
            "devices": {
                **high_pv.spec.devices,
                "inv5": high_pv.spec.devices["inv5"].model_copy(update={"scale": 1.0}),
            }
        }
    )
    unscaled = Feeder(spec)
    inputs = {d: (0.0, 0.0) if d.startswith("bat") else (PV_W, 0.0) for d in spec.devices}
    inputs["inv5"] = (4 * PV_W, 0.0)
    result = unscaled.solve(
        upstream_v_pu=1.0, load_scale=0.3, irradiance_pu=1.0, injections=inputs
    ).device_v_pu
    assert result["inv5"] == pytest.approx(scaled["inv5"], abs=1e-9)
    halved = dict(inputs, inv5=(2 * PV_W, 0.0))
    assert (
        unscaled.solve(
            upstream_v_pu=1.0, load_scale=0.3, irradiance_pu=1.0, injections=halved
        ).device_v_pu["inv5"]
        < scaled["inv5"] - 0.005
    )


def test_high_pv_far_end_exceeds_range_a_and_absorbing_brings_it_down(high_pv: Feeder) -> None:
    unity = midday(high_pv)
    assert unity["inv5"] > 1.05  # Bus R18, the far end
    absorbing = midday(high_pv, q_var=-0.44 * PV_W)
    assert absorbing["inv5"] < unity["inv5"] - 0.005


def test_high_pv_stays_in_range_a_with_category_b_volt_var(high_pv: Feeder) -> None:
    """The scenario is feasible: the IEEE 1547 cat. B default curve, iterated with the power
    flow to its steady state, keeps every device bus at or below 1.05 pu."""
    devices = list(high_pv.spec.devices)
    q = dict.fromkeys(devices, 0.0)
    for _ in range(40):
        v = high_pv.solve(
            upstream_v_pu=1.0,
            load_scale=0.3,
            irradiance_pu=1.0,
            injections={d: (0.0, 0.0) if d.startswith("bat") else (PV_W, q[d]) for d in devices},
        ).device_v_pu
        for d in devices:
            curve = float(np.interp(v[d], [0.92, 0.98, 1.02, 1.08], [0.44, 0, 0, -0.44]))
            q[d] = 0.5 * q[d] + 0.5 * curve * PV_W
    assert max(v.values()) <= 1.0485


def test_warm_start_matches_a_cold_solve_and_pandapowers_own_results(high_pv: Feeder) -> None:
    midday(high_pv, q_var=-1000.0)  # the warm feeder starts from another step's solution
    warm = high_pv.solve(
        upstream_v_pu=1.02,
        load_scale=0.5,
        irradiance_pu=0.7,
        injections={d: (3000.0, 500.0) for d in high_pv.spec.devices},
    )
    cold = Feeder(high_pv.spec).solve(
        upstream_v_pu=1.02,
        load_scale=0.5,
        irradiance_pu=0.7,
        injections={d: (3000.0, 500.0) for d in high_pv.spec.devices},
    )
    assert warm.solve_s > 0 and cold.solve_s > 0
    assert max(abs(warm.bus_v_pu[b] - cold.bus_v_pu[b]) for b in cold.bus_v_pu) < 1e-6

    import pandapower as pp  # type: ignore[import-untyped]

    net = copy.deepcopy(high_pv._net)
    net["_ppc"] = None
    pp.runpp(net, numba=False)
    for i, name in zip(net.bus.index, high_pv._names, strict=True):
        assert warm.bus_v_pu[name] == pytest.approx(net.res_bus.vm_pu[i], abs=1e-6)


def test_no_convergence_is_a_clear_error_and_the_next_step_starts_cold(one_bus: Feeder) -> None:
    with pytest.raises(FeederDidNotConverge, match=r"upstream_v_pu=1.0, .*'inv1': \(500000000.0"):
        one_bus.solve(
            upstream_v_pu=1.0,
            load_scale=1.0,
            irradiance_pu=0.0,
            injections={"inv1": (5e8, 0.0)},
        )
    after = one_bus.solve(
        upstream_v_pu=1.0, load_scale=1.0, irradiance_pu=0.0, injections={"inv1": (0.0, 0.0)}
    )
    assert after.device_v_pu["inv1"] == pytest.approx(0.99976, abs=1e-4)


def test_own_loads_and_background_pv(one_bus: Feeder) -> None:
    spec = FeederSpec.model_validate(
        own(loads=[{"bus": "b", "p_w": 20_000.0}], pv=[{"bus": "b", "peak_w": 20_000.0}])
    )
    feeder = Feeder(spec)

    def v(load_scale: float, irradiance_pu: float) -> float:
        return feeder.solve(
            upstream_v_pu=1.0,
            load_scale=load_scale,
            irradiance_pu=irradiance_pu,
            injections={"inv1": (0.0, 0.0)},
        ).device_v_pu["inv1"]

    assert v(1.0, 0.0) < v(0.5, 0.0) < v(0.0, 0.0)
    assert v(1.0, 1.0) == pytest.approx(v(0.0, 0.0), abs=2e-4)  # PV covers the load


@pytest.mark.parametrize(
    ("network", "bus", "buses"),
    [
        ("kerber_landnetz_kabel_1", "loadbus_2_2", 18),
        ("kerber_dorfnetz", "loadbus_1_1", 116),
        ("dickert_lv", "bus 2", 3),  # an unnamed bus is named by its index
    ],
)
def test_each_shipped_network_builds_and_solves(network: str, bus: str, buses: int) -> None:
    feeder = Feeder(FeederSpec.model_validate({"network": network, "devices": {"d": {"bus": bus}}}))
    v = feeder.solve(
        upstream_v_pu=1.0, load_scale=0.5, irradiance_pu=0.0, injections={"d": (5000.0, 0.0)}
    )
    assert 0.9 < v.device_v_pu["d"] < 1.1
    assert bus in feeder.lv_buses and len(v.bus_v_pu) == buses
