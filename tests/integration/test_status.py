"""``derms-edge status`` and ``monitor`` against the real daemon on Mosquitto and the rig: what
an installer reads from the gateway's retained state and one telemetry round."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from derms_edge.cli import main
from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.dso import DsoClient
from tests.support.gateway import ONE_INVERTER, rig_device, start_connected, write_config
from tests.support.mqtt_probe import MqttProbe
from tests.support.servers import Mosquitto, Process
from tests.support.waiting import eventually

GATEWAY = "status-site"
ROOT = f"derms/v1/{GATEWAY}"
RIG = {
    **ONE_INVERTER,
    "devices": [
        *ONE_INVERTER["devices"],
        {"id": "bat1", "type": "battery", "wh_rtg": 10000, "soc_pct": 61, "tau_s": 0},
    ],
}


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    with RigThread(RigSpec.model_validate(RIG)) as running:
        yield running


@pytest.fixture(scope="module")
def config(rig: RigThread, broker: Mosquitto, workdir: Path) -> Path:
    return write_config(
        workdir / "status.yaml",
        gateway={"id": GATEWAY, "state_dir": str(workdir / "state")},
        mqtt={"port": broker.port},
        devices=[
            rig_device(rig, "inv1", poll_interval_s=0.5),
            rig_device(rig, "bat1", "battery", poll_interval_s=0.5),
        ],
        # a slow replay keeps a backlog visible for a while after an outage
        telemetry={"interval_s": 1, "replay_rate_per_s": 2},
        control={"interval_s": 0.5, "roles": {"dso": {"primacy": 1}}},
    )


@pytest.fixture(scope="module")
def gateway(config: Path, broker: Mosquitto, workdir: Path) -> Iterator[Process]:
    probe = MqttProbe(broker.port, f"{ROOT}/#")
    process = start_connected(config, workdir / "status.log", probe, ROOT, ["inv1", "bat1"])
    probe.close()
    yield process
    process.stop()


def status(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["status", str(config), "--timeout", "3", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def status_showing(
    config: Path, text: str, capsys: pytest.CaptureFixture[str], timeout_s: float = 10
) -> tuple[int, str, str]:
    """``status`` run again until its screen shows ``text``."""

    def shown() -> tuple[int, str, str] | None:
        result = status(config, capsys=capsys)
        return result if text in result[1] else None

    found: tuple[int, str, str] = eventually(shown, timeout_s, what=f"{text!r} in the status")
    return found


def test_status_shows_quality_readings_and_the_dispatch_in_force_with_who_set_it(
    gateway: Process, config: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    dso = DsoClient(broker.port, ROOT)
    try:
        dso.event("curtail-42", {"max_w_pct": 42}, duration_s=600)
        # the status carries the dispatch from the next telemetry round on
        code, out, err = status_showing(config, "curtail-42 from dso", capsys)
    finally:
        dso.close()
    assert code == 0, err
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ ")}
    assert "online" in out
    assert f"127.0.0.1:{broker.port}" in out
    inverter, battery = rows["inv1"], rows["bat1"]
    assert " ok " in inverter and " ok " in battery
    assert "max_w_pct 42 (dso event curtail-42)" in inverter
    assert "61.0" in battery  # its state of charge
    assert "curtail-42 from dso" in out and "started" in out
    assert "messages not yet delivered" in out  # the backlog (its figure: the next test)


def test_status_json_has_the_retained_state_and_a_reading_per_device(
    gateway: Process, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = status(config, "--json", capsys=capsys)
    data = json.loads(out)
    assert code == 0
    assert data["status"]["online"] is True
    assert set(data["telemetry"]) == {"inv1", "bat1"}
    assert data["telemetry"]["bat1"]["soc_pct"] == pytest.approx(61, abs=1)
    assert data["capability"]["inv1"]["kind"] == "inverter"


def test_status_shows_the_backlog_after_a_broker_outage(
    gateway: Process, config: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    broker.stop()
    time.sleep(2)  # two rounds of two devices buffered
    broker.start()
    code, out, _ = status_showing(config, "online", capsys, timeout_s=15)
    backlog = next(line for line in out.splitlines() if "backlog" in line)
    assert int(backlog.split("backlog")[1].split()[0]) > 0, out
    assert code == 0


def test_status_of_a_gateway_that_is_not_running_fails_and_says_why(
    config: Path, broker: Mosquitto, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = workdir / "other.yaml"
    text = config.read_text().replace(f"id: {GATEWAY}", "id: never-started")
    other.write_text(text)
    code, _, err = status(other, capsys=capsys)
    assert code == 1
    assert "gateway never-started not found" in err
    assert "derms/v1/never-started/status" in err


def test_status_when_the_broker_is_not_there_fails_and_says_why(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.servers import free_port

    code, _, err = status(config, "--mqtt-port", str(free_port()), capsys=capsys)
    assert code == 1
    assert "connection refused" in err


def test_monitor_into_a_pipe_prints_a_line_per_message(gateway: Process, config: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "derms_edge.cli", "monitor", str(config), "--seconds", "2.5"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    lines = run.stdout.splitlines()
    status = [line for line in lines if "gateway online, devices: inv1 ok, bat1 ok" in line]
    telemetry = [line for line in lines if "  inv1     ok       w=" in line]
    assert status and len(telemetry) >= 2, run.stdout
    assert not any("│" in line for line in lines)  # no table in a pipe


def on_a_terminal(*args: str, interrupt_after_s: float | None = None) -> tuple[int, str]:
    """``derms-edge ARGS`` on a terminal (a pseudo-terminal 200 columns wide here), sent
    Ctrl-C (SIGINT) after ``interrupt_after_s``: its exit status and what it wrote."""
    import fcntl
    import os
    import pty
    import select
    import signal
    import struct
    import termios
    import threading

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    command = [sys.executable, "-m", "derms_edge.cli", *args]
    env = {**os.environ, "TERM": "xterm-256color"}
    # Ctrl-C reaches a shell's foreground job. pytest started as a background job (`cmd &`
    # in a script, nohup) has SIGINT ignored, which a child inherits; a handler it does not
    # (exec resets it): one while the child starts
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(command, stdout=follower, stderr=follower, env=env)
    finally:
        signal.signal(signal.SIGINT, previous)
    with process:
        os.close(follower)
        if interrupt_after_s is not None:
            threading.Timer(interrupt_after_s, process.send_signal, [signal.SIGINT]).start()
        chunks = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not select.select([leader], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            process.kill()
            pytest.fail(f"derms-edge {' '.join(args)} still running after 30 s")
        code = process.wait(20)
    os.close(leader)
    return code, b"".join(chunks).decode(errors="replace")


def test_monitor_on_a_terminal_draws_the_table_and_plain_keeps_the_lines(
    gateway: Process, config: Path
) -> None:
    _, table = on_a_terminal("monitor", str(config), "--seconds", "2.5")
    assert "controls in force" in table and "latest responses" in table
    assert "inv1" in table and "bat1" in table
    _, plain = on_a_terminal("monitor", str(config), "--seconds", "2.5", "--plain")
    assert "gateway online, devices: inv1 ok, bat1 ok" in plain
    assert "┃" not in plain


def test_status_watch_redraws_until_ctrl_c_and_saves_its_last_screen(
    gateway: Process, config: Path, tmp_path: Path
) -> None:
    image = tmp_path / "status.svg"
    code, shown = on_a_terminal(
        "status", str(config), "--watch", "--svg", str(image), interrupt_after_s=2.5
    )
    assert code == 0, shown
    assert shown.count("controls in force") >= 2  # drawn again in place, once a second
    assert "\x1b[" in shown  # the cursor moved back up: in place, not scrolled
    svg = image.read_text()
    assert svg.startswith("<svg") and "inv1" in svg and "bat1" in svg


def test_status_of_a_stopped_gateway_fails_and_says_since_when(
    gateway: Process, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Last in the module: it stops the gateway (SIGTERM: its goodbye is the status offline)."""
    assert status(config, capsys=capsys)[0] == 0
    gateway.stop()
    code, out, err = status(config, capsys=capsys)
    assert code == 1
    assert f"gateway {GATEWAY} is offline since" in err
    assert "OFFLINE" in out  # the screen still shows what it last said
