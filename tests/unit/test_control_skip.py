"""The control interval's step is left out only when it could not decide anything new.

A real `ControlLoop` and `Controller` on devices whose views the test sets, on clocks the
test moves; every input is a Tick (no Boundary from APScheduler), so what steps here steps
because the loop judged it due: a changed reading, an event's start and end, a dispatcher
timeout, a battery's SoC watch, a refusal taken between two intervals.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import derms_edge.control
from derms_edge.control import Controller, DeviceView, ExportLimiter, Role
from derms_edge.control.views import CONTROL_READS
from derms_edge.devices.coordinator import SetpointRefused
from derms_edge.errors import ControlRefused
from derms_edge.model import (
    Capability,
    ControlType,
    DeviceKind,
    DeviceState,
    Quality,
    SetpointName,
)
from derms_edge.northbound.commands import Command, parse_command
from derms_edge.northbound.topics import Topics
from derms_edge.runtime.control_loop import ControlLoop, Tick
from derms_edge.runtime.schedule_store import ScheduleStore
from tests.unit.test_control_loop import Recorder
from tests.unit.test_engine import T0

INVERTER = DeviceView(
    "inv1",
    DeviceKind.INVERTER,
    Quality.OK,
    DeviceState(w=3000.0, v=230.0, wh_exported=100.0),
    Capability(w_max=5000.0),
    frozenset({SetpointName.MAX_W_PCT}),
)
BATTERY = DeviceView(
    "bat1",
    DeviceKind.BATTERY,
    Quality.OK,
    DeviceState(w=3000.0, soc_pct=50.0),
    Capability(wh_rtg=1000.0, discharge_w_max=5000.0, charge_w_max=5000.0),
    frozenset({SetpointName.STORAGE_W}),
)


class Site:
    """The clocks, the device views and what the loop hands on."""

    def __init__(self, tmp_path: Path, *views: DeviceView) -> None:
        self.now, self.mono = T0, 0.0
        self.views = {view.id: view for view in views}
        self.commanded: dict[str, list[dict[SetpointName, object]]] = {v.id: [] for v in views}
        self.recorder = Recorder()
        self.steps = self.beats = 0
        controller = Controller(
            roles={"dso": Role("dso", 1, frozenset(ControlType))},
            dispatcher_timeout_s=30.0,
            limiter=ExportLimiter(0.5, 10.0, 50.0),
        )
        stepping = controller.step

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.steps += 1
            return stepping(*args, **kwargs)

        controller.step = counted  # type: ignore[method-assign]
        self.loop = ControlLoop(
            controller,
            ScheduleStore(tmp_path / "schedule.sqlite"),
            lambda: dict(self.views),  # type: ignore[arg-type]
            {v.id: _Coordinator(self.commanded[v.id]) for v in views},  # type: ignore[misc]
            Topics("derms", "site"),
            interval_s=1.0,
            respond=self.recorder.respond,
            publish=self.recorder.publish,
            on_tick=self._beat,
            clock=lambda: self.now,
            monotonic=lambda: self.mono,
        )
        self.loop._restore()  # as run() does

    def _beat(self) -> None:
        self.beats += 1

    def tick(self, seconds: float = 1.0) -> int:
        """Move the clocks on and take a Tick; the steps it made (0 or 1)."""
        self.now += timedelta(seconds=seconds)
        self.mono += seconds
        before = self.steps
        self.loop.handle([Tick()])
        return self.steps - before

    def take(self, command: Command) -> None:
        self.loop.handle([command])

    def statuses(self) -> list[tuple[object, object]]:
        return [(r["mrid"], r["status"]) for r in self.recorder.responses]

    def last(self, device: str) -> dict[SetpointName, object]:
        return self.commanded[device][-1]


class _Coordinator:
    def __init__(self, log: list[dict[SetpointName, object]]) -> None:
        self._log = log

    def command(self, setpoints: dict[SetpointName, object]) -> None:
        self._log.append(dict(setpoints))


def command(topic: str, body: object, *, retained: bool = False) -> Command:
    parsed = parse_command(
        Topics("derms", "site"),
        f"derms/v1/site/{topic}",
        json.dumps(body).encode(),
        retained=retained,
    )
    assert parsed is not None
    return parsed


def event(mrid: str, start_s: float, duration_s: float, **control: object) -> Command:
    body = {
        "mrid": mrid,
        "start": (T0 + timedelta(seconds=start_s)).isoformat(),
        "duration_s": duration_s,
        "control": control,
    }
    return command("controls/dso", body)


def test_nothing_the_core_reads_changed_no_step_yet_the_watchdog_beats(tmp_path: Path) -> None:
    site = Site(tmp_path, INVERTER)
    assert site.tick() == 1  # the first interval always steps
    assert [site.tick() for _ in range(3)] == [0, 0, 0]
    # an energy counter that moved changes no decision
    site.views["inv1"] = dataclasses.replace(
        INVERTER, state=DeviceState(3000.0, v=230.0, wh_exported=101.0)
    )
    assert site.tick() == 0
    assert site.beats == 5  # every interval: the loop is alive


def test_a_changed_reading_quality_or_capability_steps(tmp_path: Path) -> None:
    site = Site(tmp_path, INVERTER)
    site.tick()
    read = DeviceState(w=2000.0, v=240.0)
    for changed in (
        dataclasses.replace(INVERTER, state=DeviceState(w=2000.0, v=230.0)),
        dataclasses.replace(INVERTER, state=read),
        dataclasses.replace(INVERTER, state=read, quality=Quality.STALE),
        dataclasses.replace(
            INVERTER, state=read, quality=Quality.STALE, capability=Capability(w_max=6000.0)
        ),
    ):
        site.views["inv1"] = changed
        assert site.tick() == 1, changed
        assert site.tick() == 0, changed


def test_an_event_starts_and_ends_on_time_with_ticks_alone(tmp_path: Path) -> None:
    site = Site(tmp_path, INVERTER)
    site.tick()
    site.take(event("e1", start_s=10, duration_s=5, max_w_pct=40))
    steps = [site.tick() for _ in range(20)]
    print("STEPS", steps)
    assert site.statuses() == [
        ("e1", "received"),
        ("e1", "scheduled"),
        ("e1", "started"),
        ("e1", "completed"),
    ]
    assert site.last("inv1") == {}  # reverted when it ended
    assert site.tick() == 0  # nothing open any more: settled


def test_a_silent_dispatcher_is_timed_out_and_the_default_reverts(tmp_path: Path) -> None:
    site = Site(tmp_path, INVERTER)
    site.take(event("e1", start_s=0, duration_s=3600, max_w_pct=40))
    site.tick()
    assert site.last("inv1") == {SetpointName.MAX_W_PCT: 40.0}
    for _ in range(40):  # the role is silent from here on: 30 s timeout
        site.tick()
    assert site.statuses()[-1] == ("e1", "aborted")
    assert site.recorder.responses[-1]["reason"] == "dispatcher_timeout"
    assert site.last("inv1") == {}


def test_a_watched_battery_steps_every_interval_and_its_frozen_soc_stops_it(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path, BATTERY)
    site.take(command("default_control/dso", {"storage_w": 1000}, retained=True))
    assert site.last("bat1") == {SetpointName.STORAGE_W: 1000.0}
    # 3 kW through 1 kWh and the SoC never moves: frozen after 20 Wh (24 s)
    steps = [site.tick() for _ in range(30)]
    assert steps == [1] * 30
    assert SetpointName.STORAGE_W not in site.last("bat1")


def test_a_refusal_taken_between_intervals_makes_the_next_one_step(tmp_path: Path) -> None:
    site = Site(tmp_path, INVERTER)
    site.take(event("e1", start_s=0, duration_s=3600, max_w_pct=40))
    site.tick()
    assert site.last("inv1") == {SetpointName.MAX_W_PCT: 40.0}
    refusal = ControlRefused("inv1", "WMaxLimPct", "out of range")
    site.loop.handle([SetpointRefused("inv1", SetpointName.MAX_W_PCT, refusal)])
    assert site.statuses()[-1] == ("e1", "aborted")
    assert site.tick() == 1  # nothing open now, yet the abort is new: step
    assert site.last("inv1") == {}
    assert site.tick() == 0


def test_the_inputs_compared_cover_every_field_of_a_view() -> None:
    """A field added to DeviceView and left out of `control_inputs` would be an input whose
    change makes no step."""
    assert len(INVERTER.control_inputs()) == len(dataclasses.fields(DeviceView))


def test_the_control_core_reads_no_other_field_of_a_reading() -> None:
    """`DeviceView.control_inputs` keeps CONTROL_READS of a reading only: a field of
    DeviceState read anywhere in the control package must be one of them."""
    fields = {f.name for f in dataclasses.fields(DeviceState)}
    package = Path(derms_edge.control.__file__).parent
    read = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in fields:
                owner = node.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                if name == "state":
                    read.add(node.attr)
    assert read, "the scan found no read at all: it is broken"
    assert read <= set(CONTROL_READS), f"read but not in CONTROL_READS: {read - set(CONTROL_READS)}"
