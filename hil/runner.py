"""`derms-edge hil run SCENARIO --report DIR [--speed N]`: run a scenario against the real
daemon and judge it.

It starts a Mosquitto broker (with persistence, so a broker outage keeps sessions), the rig
(every DER with the scenario's dynamics, on its feeder), and `derms-edge run` as its own
process on the scenario's gateway configuration (broker, device ports and state directory
set here). The rig's clock stands still until the gateway reads every device; then the
scenario's time starts, the timeline is played (DSO messages over MQTT, faults), the physics
is recorded, and at the end the tests are judged and the report written. Faster than real
time, all of it runs under libfaketime (`hil.timewarp`).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import resource
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hil.dispatcher import Dispatcher
from hil.judge import judge
from hil.physics import SimClock
from hil.processes import Mosquitto, Process
from hil.records import Event, Recording, TestResult
from hil.report import ReportMeta, write_report
from hil.rig import Rig, RigThread
from hil.scenario import (
    CancelStep,
    DefaultControlStep,
    EventStep,
    FaultStep,
    HeartbeatStep,
    MarkStep,
    Scenario,
    ScenarioError,
    Step,
    load_scenario,
)
from hil.spec import OpcUaSpec, RigSpec, TableProfileSpec, load_rig_spec
from hil.stepper import Drive, Stepper, series
from hil.timewarp import TimewarpUnavailable, real_seconds, rerun_warped, warped_speed

if TYPE_CHECKING:
    from hil.feeder import Feeder

CONNECT_TIMEOUT_REAL_S = 60.0
"""How long (real s) the gateway may take to read every device before the run gives up."""
KINDS = {
    "pv_legacy": "pv",
    "pv_1547": "pv",
    "battery": "battery",
    "opcua_battery": "battery",
    "evse": "evse",
    "opcua_evse": "evse",
    "ocpp_evse": "evse",
    "meter": "meter",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished run: its results and how fast it went."""

    results: list[TestResult]
    recording: Recording
    simulated_s: float
    wall_s: float
    steps: int
    """Physics steps made."""
    late_steps: int
    """Steps that ran more than a step late: the machine did not keep up at this speed."""
    behind_s: float
    """The longest a step ran late, simulated s."""
    cpu_s: float
    """CPU time of the runner, the rig, the broker and the gateway together, s."""

    def figures(self) -> dict[str, float]:
        """How the run went, for run.json and the benchmark."""
        solve = sorted(self.recording.solve_s)
        return {
            "simulated_s": self.simulated_s,
            "wall_s": round(self.wall_s, 2),
            "speed": round(self.simulated_s / max(self.wall_s, 1e-3), 2),
            "physics_steps": self.steps,
            "late_steps": self.late_steps,
            "max_late_s": round(self.behind_s, 3),
            "cpu_s": round(self.cpu_s, 2),
            "cpu_cores_used": round(self.cpu_s / max(self.wall_s, 1e-3), 2),
            "solve_median_ms": round(solve[len(solve) // 2] * 1e3, 2) if solve else 0.0,
            "solve_max_ms": round(solve[-1] * 1e3, 2) if solve else 0.0,
        }

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


def rig_for(scenario: Scenario) -> RigSpec:
    """The scenario's rig: its dynamics on every DER that has them, the irradiance profile in
    place of the PV devices' own."""
    spec = load_rig_spec(scenario.rig)
    devices = []
    for d in spec.devices:
        update: dict[str, Any] = {}
        if "dynamics" in type(d).model_fields:
            update["dynamics"] = scenario.dynamics
        irradiance = scenario.profiles.irradiance
        if irradiance is not None and d.type in ("pv_legacy", "pv_1547"):
            w_rtg = d.w_rtg
            points = [(t, pu * w_rtg) for t, pu in irradiance]
            update["profile"] = TableProfileSpec(kind="table", points=points, loop=False)
        devices.append(d.model_copy(update=update))
    return spec.model_copy(update={"devices": devices, "tick_s": None})


def gateway_config(
    scenario: Scenario, rig: RigThread, broker_port: int, state: Path
) -> dict[str, Any]:
    """The scenario's gateway configuration with this run's broker, ports and state directory."""
    config: dict[str, Any] = copy.deepcopy(yaml.safe_load(scenario.gateway.read_text()))
    config.setdefault("gateway", {})["state_dir"] = str(state)
    mqtt = config.setdefault("mqtt", {})
    mqtt.update({"host": "127.0.0.1", "port": broker_port})
    ids = {d.id: d for d in rig.spec.devices}
    for device in config.get("devices", []):
        spec = ids.get(device.get("id"))
        if spec is None:
            continue
        if isinstance(spec, OpcUaSpec):
            device["endpoint"] = rig.endpoint(spec.id)
        else:
            device.update({"host": "127.0.0.1", "port": rig.port(spec.id)})
    return config


def topic_root(config: dict[str, Any]) -> str:
    """The gateway's topic root, {prefix}/v1/{gateway id} (docs/mqtt-api.md)."""
    return f"{config.get('mqtt', {}).get('prefix', 'derms')}/v1/{config['gateway']['id']}"


class Progress:
    """One status line on stderr: simulated time, wall time, speed (a bar on a terminal,
    a line per tenth otherwise)."""

    def __init__(self, duration_s: float) -> None:
        self.duration_s = duration_s
        self.started = real_seconds()
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def show(self, t_s: float) -> None:
        wall = max(real_seconds() - self.started, 1e-3)
        done = min(max(t_s / self.duration_s, 0.0), 1.0)
        line = (
            f"{_clock(t_s)} / {_clock(self.duration_s)} simulated  {wall:7.1f} s wall  "
            f"x{t_s / wall:5.1f}"
        )
        if self.tty:
            bar = "#" * int(done * 30)
            sys.stderr.write(f"\r[{bar:<30}] {line}")
            sys.stderr.flush()
        elif int(done * 10) > self.shown:
            self.shown = int(done * 10)
            print(line, file=sys.stderr, flush=True)

    def wall_s(self) -> float:
        return real_seconds() - self.started


def _clock(t_s: float) -> str:
    h, rest = divmod(int(t_s), 3600)
    return f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"


class ScenarioRun:
    """One run of one scenario, its report in `directory`."""

    def __init__(self, scenario: Scenario, directory: Path, speed: float) -> None:
        self.scenario = scenario
        self.directory = directory
        self.speed = speed
        self.recording = Recording()
        self.broker = Mosquitto(directory / "broker", persistent=True, timeout_s=10.0 * speed)
        self.clock = SimClock(paused=True)
        self.rig = RigThread(rig_for(scenario), clock=self.clock, timeout_s=30.0 * speed)
        self.gateway: Process | None = None
        self.dispatcher: Dispatcher | None = None
        self.stepper: Stepper | None = None
        self.feeder: Feeder | None = None

    def run(self) -> Outcome:
        self.directory.mkdir(parents=True, exist_ok=True)
        feeder = self.feeder = self._feeder()
        if self.scenario.dynamics == "opender":
            from hil.opender_physics import set_opender_step

            set_opender_step(self.scenario.physics_step_s)
        self.broker.start()
        self.rig.start()
        try:
            dispatcher = self._start_gateway()
            progress = Progress(self.scenario.duration_s)
            dispatcher.t0 = self.rig.call(lambda _rig: _resume(self.clock))
            until_s = self.scenario.duration_s
            stepping = self.rig.call(lambda rig: _spawn(self._stepper(rig, feeder).run(until_s)))
            self._play(dispatcher, progress)
            self.rig.call(lambda _rig: stepping.cancel())
            wall_s = progress.wall_s()
            if progress.tty:
                print(file=sys.stderr)
        finally:
            self._stop()
        results = judge(self.recording, self.scenario.tests)
        stepper = self.stepper
        return Outcome(
            results,
            self.recording,
            self.scenario.duration_s,
            wall_s,
            steps=0 if stepper is None else stepper.steps,
            late_steps=0 if stepper is None else stepper.late_steps,
            behind_s=0.0 if stepper is None else stepper.behind_s,
            cpu_s=cpu_seconds(),
        )

    def _feeder(self) -> Feeder | None:
        """The scenario's feeder, built (and pandapower imported) before the rig's clock runs."""
        if self.scenario.feeder is None:
            return None
        from hil.feeder import Feeder, load_feeder_spec

        return Feeder(load_feeder_spec(self.scenario.feeder))

    def _stepper(self, rig: Rig, feeder: Feeder | None) -> Stepper:
        profiles = self.scenario.profiles
        drive = Drive(
            load=series(profiles.load, 1.0),
            upstream_v_pu=series(profiles.upstream_v_pu, 1.0),
            irradiance=series(profiles.irradiance, 1.0),
        )
        self.stepper = Stepper(
            rig,
            feeder,
            drive,
            self.recording,
            physics_step_s=self.scenario.physics_step_s,
            sample_s=self.scenario.sample_s,
            speed=self.speed,
            external=None if self.dispatcher is None else self.dispatcher.power,
        )
        return self.stepper

    def _start_gateway(self) -> Dispatcher:
        config = gateway_config(self.scenario, self.rig, self.broker.port, self.directory / "state")
        path = self.directory / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        simulated = {d.id for d in self.rig.spec.devices}
        external = frozenset(d["id"] for d in config.get("devices", []) if d["id"] not in simulated)
        self.dispatcher = Dispatcher(
            self.broker.port,
            topic_root(config),
            self.recording,
            external=external,
            v_nom=230.0 if self.feeder is None else self.feeder.spec.v_nom,
        )
        self.gateway = Process(
            [sys.executable, "-m", "derms_edge.cli", "run", str(path)],
            self.directory / "gateway.log",
            env={"PYTHONUNBUFFERED": "1"},
        )
        wanted = {d["id"] for d in config.get("devices", [])}
        deadline = time.monotonic() + CONNECT_TIMEOUT_REAL_S * self.speed
        while not wanted <= self.dispatcher.reading:
            if not self.gateway.alive() or time.monotonic() > deadline:
                missing = ", ".join(sorted(wanted - self.dispatcher.reading))
                raise RuntimeError(
                    f"the gateway did not read {missing} (see {self.directory / 'gateway.log'})"
                )
            time.sleep(0.05 * self.speed)
        return self.dispatcher

    def _play(self, dispatcher: Dispatcher, progress: Progress) -> None:
        """Play the timeline until the end of the run, showing progress."""
        pending = sorted(expand(self.scenario.timeline, self.scenario.duration_s), key=_at)
        ends: list[tuple[float, FaultStep]] = []
        while True:
            t = dispatcher.now_s()
            progress.show(t)
            while ends and ends[0][0] <= t:
                self._end_fault(ends.pop(0)[1], dispatcher)
            while pending and _at(pending[0]) <= t:
                step = pending.pop(0)
                if isinstance(step, FaultStep):
                    self._start_fault(step, dispatcher)
                    ends = sorted([*ends, (step.at_s + step.duration_s, step)], key=lambda e: e[0])
                else:
                    self._send(step, dispatcher)
            if t >= self.scenario.duration_s:
                return
            upcoming = [self.scenario.duration_s, *(_at(s) for s in pending[:1])]
            upcoming += [e[0] for e in ends[:1]]
            time.sleep(max(0.0, min(min(upcoming) - t, 1.0 * self.speed)))

    def _send(self, step: Step, dispatcher: Dispatcher) -> None:
        if isinstance(step, EventStep):
            body: dict[str, Any] = {
                "mrid": step.mrid,
                "creation_time": _iso(dispatcher.wall(dispatcher.now_s())),
                "start": _iso(dispatcher.wall(step.at_s + step.start_in_s)),
                "duration_s": step.duration_s,
                "control": step.control,
            }
            if step.devices is not None:
                body["devices"] = step.devices
            if step.primacy is not None:
                body["primacy"] = step.primacy
            dispatcher.publish(f"controls/{step.role}", body)
        elif isinstance(step, CancelStep):
            dispatcher.publish(f"controls/{step.role}/cancel", {"mrid": step.mrid})
        elif isinstance(step, DefaultControlStep):
            dispatcher.publish(f"default_control/{step.role}", step.control, retain=True)
        elif isinstance(step, HeartbeatStep):
            dispatcher.heartbeat(step.role)
        elif isinstance(step, MarkStep):
            # at its scheduled time: what it labels (a load step in a profile) happens in the
            # physics exactly then, and the judge excuses settling from that instant
            dispatcher.record(Event(step.at_s, "mark", detail=step.label))

    def _start_fault(self, step: FaultStep, dispatcher: Dispatcher) -> None:
        dispatcher.record(
            Event(
                dispatcher.now_s(),
                "fault",
                detail=f"{step.fault} start",
                payload=_fault_payload(step),
            )
        )
        if step.fault == "broker_outage":
            self.broker.stop()
        elif step.fault == "meter_loss":
            assert step.device is not None
            self.rig.close_port(step.device)
        else:
            assert step.device is not None
            device, down_s = step.device, step.duration_s
            self.rig.call(lambda rig: _spawn(rig.reboot(device, down_s)))

    def _end_fault(self, step: FaultStep, dispatcher: Dispatcher) -> None:
        if step.fault == "broker_outage":
            self.broker.start()
        elif step.fault == "meter_loss":
            assert step.device is not None
            self.rig.open_port(step.device)
        dispatcher.record(
            Event(
                dispatcher.now_s(),
                "fault",
                detail=f"{step.fault} end",
                payload=_fault_payload(step),
            )
        )

    def _stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop(10.0 * self.speed)
        if self.dispatcher is not None:
            self.dispatcher.close()
        self.rig.stop()
        self.broker.stop()


def cpu_seconds() -> float:
    """CPU time (user and system) of this process and its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _resume(clock: SimClock) -> float:
    """Start the scenario's time: the rig's clock runs on; its wall-clock instant (the t0
    of every time the dispatcher records)."""
    clock.resume()
    return time.time()


def _spawn(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run work as a task on the rig's loop (called there, through RigThread.call)."""
    return asyncio.get_running_loop().create_task(work)


def expand(timeline: list[Step], duration_s: float) -> list[Step]:
    """The timeline with every heartbeat step expanded into its single beats."""
    steps: list[Step] = []
    for step in timeline:
        if isinstance(step, HeartbeatStep):
            until = duration_s if step.until_s is None else min(step.until_s, duration_s)
            n = int((until - step.at_s) // step.every_s) + 1
            steps.extend(
                step.model_copy(update={"at_s": step.at_s + k * step.every_s}) for k in range(n)
            )
        else:
            steps.append(step)
    return steps


def _at(step: Step) -> float:
    return step.at_s


def _iso(moment: Any) -> str:
    return str(moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def _fault_payload(step: FaultStep) -> str:
    return step.model_dump_json(exclude={"do"})


def reserves(scenario: Scenario) -> dict[str, float]:
    """The reserve SoC the tests hold each battery to, for the report's SoC plot."""
    return {t.device: t.reserve_pct for t in scenario.tests if t.kind == "soc_at_least"}


def main(argv: list[str]) -> int:
    """`hil run SCENARIO --report DIR [--speed N]`; exit 0 only if every test passed."""
    parser = argparse.ArgumentParser(prog="derms-edge hil run", description=__doc__)
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--report", type=Path, required=True, help="directory for the report")
    parser.add_argument(
        "--speed", type=float, default=None, help="simulated s per wall s (default: the scenario's)"
    )
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as error:
        print(f"hil run: {error}", file=sys.stderr)
        return 2
    speed = scenario.speed if args.speed is None else args.speed
    if speed <= 0:
        print("hil run: --speed must be positive", file=sys.stderr)
        return 2
    if speed != 1 and warped_speed() != speed:
        try:
            rerun_warped(
                speed,
                ["run", *argv] if "--speed" in argv else ["run", *argv, "--speed", f"{speed:g}"],
            )
        except TimewarpUnavailable as error:
            print(f"hil run: {error}", file=sys.stderr)
            return 2
    args.report.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(  # the rig's own log (pymodbus, asyncua): the console shows progress
        filename=args.report / "rig.log",
        level=logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    outcome = ScenarioRun(scenario, args.report, speed).run()
    meta = ReportMeta(
        scenario=scenario.name,
        description=scenario.description,
        simulated_s=outcome.simulated_s,
        wall_s=outcome.wall_s,
        reserves=reserves(scenario),
        devices={d.id: KINDS.get(d.type, d.type) for d in load_rig_spec(scenario.rig).devices},
    )
    write_report(args.report, outcome.recording, outcome.results, meta)
    log = (args.report / "gateway.log").read_text(errors="replace")
    figures = {**outcome.figures(), "gateway_offline_warnings": log.count(": offline: ")}
    (args.report / "run.json").write_text(json.dumps(figures, indent=2) + "\n")
    for result in outcome.results:
        mark = "PASS" if result.passed else "FAIL"
        print(f"{mark} {result.test}: {result.detail}")
    print(
        f"report: {args.report / 'index.html'}  "
        f"({outcome.simulated_s:.0f} s simulated in {outcome.wall_s:.1f} s, "
        f"x{outcome.simulated_s / max(outcome.wall_s, 1e-3):.1f})"
    )
    return 0 if outcome.passed else 1
