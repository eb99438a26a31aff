"""What status and monitor's table make of a gateway's messages: which values in force came
from whom, what is folded in and what is ignored."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from rich.console import Console

from derms_edge.cli.screen import screen, who
from derms_edge.cli.view import GatewayView
from derms_edge.northbound.topics import Topics

ROOT = "derms/v1/site"


def test_who_set_a_value_in_force() -> None:
    assert who({"source": "event", "mrid": "ev-1", "role": "dso"}) == "dso event ev-1"
    assert who({"source": "default", "role": "aggregator"}) == "default of aggregator"
    assert who({"source": "default", "role": None}) == "configured default"
    assert who({"source": "export_limit"}) == "export limit loop"
    assert who({"source": "export_limit_fallback"}) == "export limit (meter not fresh)"


def test_the_view_folds_the_gateways_topics_and_ignores_the_rest() -> None:
    view = GatewayView(Topics("derms", "site"))
    status = {"online": True, "devices": ["inv1", "bat1"], "device_quality": {"inv1": "ok"}}
    assert view.take(f"{ROOT}/status", json.dumps(status).encode()) == status
    assert view.take(f"{ROOT}/telemetry/inv1", b'{"quality": "stale", "w": 1.0}') is not None
    assert view.take(f"{ROOT}/active", b"") is None  # a retained message deleted
    assert view.take(f"{ROOT}/responses", b"[1, 2]") is None
    assert view.take("derms/v1/other/telemetry/x", b'{"w": 1}') is None
    assert view.devices == ["inv1", "bat1"]
    assert view.quality("inv1") == "stale"  # its latest reading's, ahead of the status's
    assert view.quality("bat1") == "unknown"


def test_the_screen_shows_each_device_with_its_controls_and_the_site_ones() -> None:
    view = GatewayView(Topics("derms", "site"))
    now = datetime(2026, 11, 21, 10, 0, 5, tzinfo=UTC)
    messages = {
        "status": {"online": True, "ts": "2026-11-21T10:00:00.000Z", "devices": ["inv1"],
                   "buffered": 12, "dropped": 3,
                   "last_dispatch": {"role": "dso", "mrid": "ev-9", "status": "rejected",
                                     "reason": "soc_limit", "received": "2026-11-21T09:59:00Z"}},
        "telemetry/inv1": {"ts": "2026-11-21T10:00:04.000Z", "quality": "ok", "kind": "inverter",
                           "w": 4211.0, "v": 230.14, "hz": 50.01},
        "active": {"devices": {"inv1": {"max_w_pct": {"value": 42.5, "source": "export_limit"}}},
                   "site": {"export_limit_w": {"value": 5000.0, "source": "event",
                                               "mrid": "ev-1", "role": "dso"}}},
    }  # fmt: skip
    for topic, data in messages.items():
        view.take(f"{ROOT}/{topic}", json.dumps(data).encode())
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(screen(view, "127.0.0.1:1883", now=now))
    text = console.export_text()
    inverter = next(line for line in text.splitlines() if "inv1" in line)
    assert "4,211" in inverter and "230.1" in inverter and "50.01" in inverter
    assert "max_w_pct 42.5 (export limit loop)" in inverter
    assert "export_limit_w 5000 (dso event ev-1)" in text
    assert "12 messages not yet delivered, 3 dropped" in text
    assert "ev-9 from dso, 65 s ago: rejected soc_limit" in text


def test_the_command_line_loads_rich_and_doctors_checks_only_for_the_commands_using_them() -> None:
    """`derms-edge run` starts through the same command line: on a Pi, rich costs about 4 MB
    and 150 ms, doctor's checks pymodbus and the SunSpec models."""
    import subprocess
    import sys

    probe = (
        "import sys, derms_edge.cli; "
        "print(sorted(m for m in ('rich', 'derms_edge.diagnostics.doctor', 'derms_edge.cli.screen')"
        " if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
