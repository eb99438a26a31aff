"""The rig's feeder: a pandapower power flow that turns every DER's P and Q into bus voltages.

Each physics step the runner calls `Feeder.solve` with every rig DER's P and Q, the load level,
the irradiance of the background PV and the upstream (substation) voltage; the feeder answers
each device's bus voltage, which the runner sets as the device's terminal voltage so that its
IEEE 1547 functions act on it. Pure and synchronous: no asyncio, no clock but the
`time.perf_counter` that times the solve.

The network is one that ships with pandapower (its CIGRE LV, Kerber or Dickert feeders) or a
small one of the feeder file's own. Each rig device is a static generator (sgen) at its bus,
standing for ``scale`` identical units; the elements are made once and their values updated in
place each step. The power flow is pandapower's balanced three-phase Newton-Raphson
(`pandapower.runpp`): the devices are modelled as balanced three-phase, a single-phase
house's unbalance is not. After the first solve each step reuses the previous solution and the
admittance matrix (pandapower's ``recycle``, the technique of its own time series): only the
bus injections and the upstream voltage are rebuilt.

Solve time per step, measured (``python bench/feeder.py``: cigre_lv_high_pv, 44 buses, 10
DERs changing P and Q every step, 500 steps, this 2-core machine, pandapower without numba):
the whole `Feeder.solve` call median 6.3 ms, p99 11.0 ms, max 11.3 ms (the power flow alone
6.0 ms median), i.e. 0.63 % of a 1 s step and 6.3 % of a 0.1 s step; the first, cold solve
37 ms.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

NetworkName = Literal["cigre_lv", "kerber_landnetz_kabel_1", "kerber_dorfnetz", "dickert_lv", "own"]
_FACTORIES = {  # network name -> its function in pandapower.networks
    "cigre_lv": "create_cigre_network_lv",
    "kerber_landnetz_kabel_1": "create_kerber_landnetz_kabel_1",
    "kerber_dorfnetz": "create_kerber_dorfnetz",
    "dickert_lv": "create_dickert_lv_network",
}
_RECYCLE = {"bus_pq": True, "gen": True, "trafo": False}  # injections and ext_grid change
_VM = 7  # column of the voltage magnitude in pandapower's internal bus table (pypower VM)
_W_PER_MW = 1e6


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OwnBusSpec(_Spec):
    name: str = Field(min_length=1)
    vn_kv: float = Field(gt=0, description="nominal line-to-line voltage, kV")


class OwnLineSpec(_Spec):
    """A line or cable between two buses, by its per-km parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_bus: str = Field(alias="from")
    to_bus: str = Field(alias="to")
    length_km: float = Field(gt=0)
    r_ohm_per_km: float = Field(ge=0)
    x_ohm_per_km: float = Field(ge=0)
    c_nf_per_km: float = Field(default=0.0, ge=0)
    max_i_ka: float = Field(gt=0)


class OwnNetworkSpec(_Spec):
    """A small radial or meshed network of lines; the ext_grid bus is the stiff source."""

    buses: list[OwnBusSpec] = Field(min_length=1)
    lines: list[OwnLineSpec] = Field(default_factory=list)
    ext_grid: str = Field(description="the bus the upstream (substation) voltage is set at")

    @model_validator(mode="after")
    def _consistent(self) -> OwnNetworkSpec:
        names = [b.name for b in self.buses]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"own network: bus names must be unique, given twice: {twice}")
        for line in self.lines:
            for end in (line.from_bus, line.to_bus):
                if end not in names:
                    raise ValueError(
                        f"own network: line {line.from_bus}-{line.to_bus} names bus {end!r}, "
                        f"which is not among the buses {names}"
                    )
        if self.ext_grid not in names:
            raise ValueError(f"own network: ext_grid {self.ext_grid!r} is not among {names}")
        reached = _reachable({self.ext_grid}, [(ln.from_bus, ln.to_bus) for ln in self.lines])
        if unreached := [n for n in names if n not in reached]:
            raise ValueError(f"own network: buses {unreached} are not connected to the ext_grid")
        return self


class DevicePlacement(_Spec):
    """Where a rig device sits; it stands for ``scale`` identical units at that bus."""

    bus: str = Field(min_length=1)
    scale: float = Field(default=1.0, gt=0)


class LoadSpec(_Spec):
    """A load of the feeder file's own at load_scale 1 (positive W and var are consumed)."""

    bus: str = Field(min_length=1)
    p_w: float = Field(ge=0)
    q_var: float = 0.0


class BackgroundPvSpec(_Spec):
    """PV without a rig device: injects peak_w times the irradiance (pu) at unity power factor."""

    bus: str = Field(min_length=1)
    peak_w: float = Field(ge=0)


class FeederSpec(_Spec):
    """A feeder file: the network, where each rig device sits, the loads and background PV."""

    network: NetworkName
    own: OwnNetworkSpec | None = Field(default=None, description="with network: own only")
    v_nom: float = Field(
        default=230.0, gt=0, description="line-to-neutral V the devices are rated for"
    )
    devices: dict[str, DevicePlacement] = Field(
        min_length=1, description="rig device id -> its bus"
    )
    loads: Literal["network"] | list[LoadSpec] = Field(
        default="network",
        description="network: the network's own loads; a list replaces them; both scaled by "
        "load_scale each solve",
    )
    pv: list[BackgroundPvSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _own(self) -> FeederSpec:
        if (self.network == "own") != (self.own is not None):
            raise ValueError("`own:` describes the network exactly when network is 'own'")
        return self


class _NoDuplicateKeys(yaml.SafeLoader):
    """YAML that refuses a key given twice (a device listed twice would silently vanish)."""


def _mapping(loader: _NoDuplicateKeys, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(key) for key, _ in node.value]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise ValueError(f"{node.start_mark}: {key!r} is given twice")
    return loader.construct_mapping(node)


_NoDuplicateKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_feeder_spec(path: str | Path) -> FeederSpec:
    """Read and validate a feeder YAML file."""
    text = Path(path).read_text()
    return FeederSpec.model_validate(yaml.load(text, Loader=_NoDuplicateKeys))


@dataclass(frozen=True, slots=True)
class FeederResult:
    """One solve's answer."""

    bus_v_pu: dict[str, float]
    """Every bus of the network by name, per unit of its nominal voltage."""
    device_v_pu: dict[str, float]
    """Per rig device id: the voltage of its bus, pu (times v_nom: its terminal voltage)."""
    solve_s: float
    """Wall seconds the solve took."""


class FeederDidNotConverge(RuntimeError):
    """The power flow found no solution for a step's inputs."""


def _reachable(start: set[str], edges: list[tuple[str, str]]) -> set[str]:
    """The nodes connected to ``start`` through the undirected ``edges``."""
    seen = set(start)
    frontier = list(start)
    while frontier:
        node = frontier.pop()
        for a, b in edges:
            for here, there in ((a, b), (b, a)):
                if here == node and there not in seen:
                    seen.add(there)
                    frontier.append(there)
    return seen


def _own_network(own: OwnNetworkSpec) -> Any:
    import pandapower as pp  # type: ignore[import-untyped]

    net = pp.create_empty_network()
    index = {b.name: pp.create_bus(net, vn_kv=b.vn_kv, name=b.name) for b in own.buses}
    for ln in own.lines:
        pp.create_line_from_parameters(
            net,
            index[ln.from_bus],
            index[ln.to_bus],
            length_km=ln.length_km,
            r_ohm_per_km=ln.r_ohm_per_km,
            x_ohm_per_km=ln.x_ohm_per_km,
            c_nf_per_km=ln.c_nf_per_km,
            max_i_ka=ln.max_i_ka,
            name=f"{ln.from_bus}-{ln.to_bus}",
        )
    pp.create_ext_grid(net, index[own.ext_grid], vm_pu=1.0)
    return net


def _bus_names(net: Any) -> list[str]:
    """A name per bus, in index order: its own where unique, else ``bus <index>``."""
    names = [n if isinstance(n, str) and n else "" for n in net.bus.name]
    return [
        n if n and names.count(n) == 1 else f"bus {i}"
        for i, n in zip(net.bus.index, names, strict=True)
    ]


class Feeder:
    """A feeder's network with the rig devices placed on it, solved once per physics step."""

    def __init__(self, spec: FeederSpec) -> None:
        import pandapower as pp
        import pandapower.networks as pn  # type: ignore[import-untyped]

        self.spec = spec
        if spec.own is not None:
            net = _own_network(spec.own)
        else:
            net = getattr(pn, _FACTORIES[spec.network])()
        self._net = net
        self._names = _bus_names(net)
        self._index = dict(zip(self._names, (int(i) for i in net.bus.index), strict=True))

        if spec.loads != "network":
            net.load = net.load.iloc[0:0]
            for load in spec.loads:
                pp.create_load(
                    net,
                    self._bus("load", load.bus),
                    p_mw=load.p_w / _W_PER_MW,
                    q_mvar=load.q_var / _W_PER_MW,
                )
        self._load_scaling = net.load.scaling.to_numpy(dtype=float, copy=True)

        self._devices = list(spec.devices)
        self._device_bus = {d: p.bus for d, p in spec.devices.items()}
        self._scale = np.array([p.scale for p in spec.devices.values()])
        rows = [
            pp.create_sgen(net, self._bus(f"device {d!r}", p.bus), p_mw=0.0, name=d)
            for d, p in spec.devices.items()
        ]
        pv_rows = [
            pp.create_sgen(net, self._bus("background PV", pv.bus), p_mw=0.0, name="pv")
            for pv in spec.pv
        ]
        self._peak_mw = np.array([pv.peak_w / _W_PER_MW for pv in spec.pv])
        self._device_pos = net.sgen.index.get_indexer(rows)
        self._pv_pos = net.sgen.index.get_indexer(pv_rows)
        self._sgen_p = net.sgen.p_mw.to_numpy(dtype=float, copy=True)
        self._sgen_q = net.sgen.q_mvar.to_numpy(dtype=float, copy=True)
        self._lv_buses = self._level_of_devices()
        self._ppc_bus: np.ndarray[Any, np.dtype[np.int64]] | None = None  # set by a cold solve

    def _bus(self, what: str, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise ValueError(
                f"{what}: bus {name!r} is not in network {self.spec.network!r}; "
                f"its buses are {self._names}"
            ) from None

    def _level_of_devices(self) -> list[str]:
        """The buses galvanically connected (lines, closed bus-bus switches) to a device's."""
        net = self._net
        by_index = dict(zip(net.bus.index, self._names, strict=True))
        edges = [
            (by_index[a], by_index[b])
            for a, b, on in zip(
                net.line.from_bus, net.line.to_bus, net.line.in_service, strict=True
            )
            if on
        ]
        switches = net.switch[(net.switch.et == "b") & net.switch.closed]
        edges += [
            (by_index[a], by_index[b]) for a, b in zip(switches.bus, switches.element, strict=True)
        ]
        reached = _reachable(set(self._device_bus.values()), edges)
        return [n for n in self._names if n in reached]

    def bus_of(self, device_id: str) -> str:
        """The bus a rig device sits at."""
        return self._device_bus[device_id]

    @property
    def lv_buses(self) -> list[str]:
        """The buses at the devices' voltage level (those connected to a device's bus by lines
        and closed bus-bus switches, not transformers), in the network's bus order."""
        return list(self._lv_buses)

    def solve(
        self,
        *,
        upstream_v_pu: float,
        load_scale: float,
        irradiance_pu: float,
        injections: Mapping[str, tuple[float, float]],
    ) -> FeederResult:
        """Solve one step. ``injections``: every placed device id -> (P W, Q var), positive
        delivered to the grid / injected, per unit (multiplied by its ``scale`` at the bus).

        Raises ValueError when ``injections`` does not name exactly the placed devices, and
        FeederDidNotConverge (naming the inputs) when the power flow finds no solution; the
        next solve then starts cold."""
        import pandapower as pp

        if set(injections) != set(self._devices):
            raise ValueError(
                f"injections name {sorted(injections)}, the feeder places {sorted(self._devices)}"
            )
        pq = np.array([injections[d] for d in self._devices], dtype=float).reshape(-1, 2)
        net = self._net
        self._sgen_p[self._device_pos] = pq[:, 0] * self._scale / _W_PER_MW
        self._sgen_q[self._device_pos] = pq[:, 1] * self._scale / _W_PER_MW
        self._sgen_p[self._pv_pos] = self._peak_mw * irradiance_pu
        net.sgen["p_mw"] = self._sgen_p
        net.sgen["q_mvar"] = self._sgen_q
        net.load["scaling"] = self._load_scaling * load_scale
        net.ext_grid["vm_pu"] = upstream_v_pu

        cold = self._ppc_bus is None
        started = time.perf_counter()
        try:
            pp.runpp(net, numba=False, recycle=_RECYCLE, only_v_results=True)
            converged = bool(net["_ppc"]["success"])
        except pp.powerflow.LoadflowNotConverged:
            converged = False
        solve_s = time.perf_counter() - started
        if cold and converged:
            self._ppc_bus = net._pd2ppc_lookups["bus"][net.bus.index.to_numpy()]
        vm = net["_ppc"]["bus"][self._ppc_bus, _VM].real if converged else np.array([math.nan])
        if not converged or not np.isfinite(vm).all():
            net["_ppc"] = None  # the next solve starts flat, not from a failed iterate
            self._ppc_bus = None
            raise FeederDidNotConverge(
                f"feeder {self.spec.network!r}: the power flow did not converge for "
                f"upstream_v_pu={upstream_v_pu}, load_scale={load_scale}, "
                f"irradiance_pu={irradiance_pu}, injections (W, var)={dict(injections)}; "
                "check the units (W and var, not kW) and the signs (positive delivered)"
            )
        bus_v = dict(zip(self._names, vm.tolist(), strict=True))
        return FeederResult(
            bus_v_pu=bus_v,
            device_v_pu={d: bus_v[b] for d, b in self._device_bus.items()},
            solve_s=solve_s,
        )
