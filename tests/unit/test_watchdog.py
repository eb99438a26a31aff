"""The systemd watchdog: sd_notify datagrams on a real AF_UNIX socket, pings only while healthy."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from derms_edge.runtime.watchdog import Notifier, Watchdog, notify_address, watchdog_interval


@dataclass
class Datagram:
    at: float
    fields: dict[str, str]


@dataclass
class SystemdSocket:
    """What systemd listens on: an AF_UNIX datagram socket; records what arrives, and when."""

    sock: socket.socket
    name: str
    """As systemd puts it in $NOTIFY_SOCKET."""
    received: list[Datagram] = field(default_factory=list)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.sock.fileno(), self._read)

    def detach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._read()
        loop.remove_reader(self.sock.fileno())

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            lines = data.decode().split("\n")
            self.received.append(
                Datagram(time.monotonic(), dict(line.split("=", 1) for line in lines))
            )

    def pings(self) -> list[float]:
        return [d.at for d in self.received if d.fields.get("WATCHDOG") == "1"]

    def statuses(self) -> list[str]:
        return [d.fields["STATUS"] for d in self.received if "STATUS" in d.fields]


@pytest.fixture
def systemd() -> Iterator[SystemdSocket]:
    directory = Path(tempfile.mkdtemp(prefix="sd-"))  # short: socket paths end at 108 bytes
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield SystemdSocket(sock, str(path))
    sock.close()
    path.unlink()
    directory.rmdir()


def environment(systemd: SystemdSocket, watchdog_usec: int | None = 400_000) -> dict[str, str]:
    env = {"NOTIFY_SOCKET": systemd.name}
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
        env["WATCHDOG_PID"] = str(os.getpid())
    return env


@contextlib.asynccontextmanager
async def running(watchdog: Watchdog, systemd: SystemdSocket) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    systemd.attach(loop)
    task = asyncio.create_task(watchdog.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        systemd.detach(loop)


def test_ready_at_once_then_pings_every_half_watchdog_usec_then_stopping(
    systemd: SystemdSocket,
) -> None:
    watchdog = Watchdog.from_environment(environment(systemd), status=lambda: "3 devices ok")
    assert watchdog.interval_s == pytest.approx(0.2)

    async def scenario() -> None:
        async with running(watchdog, systemd):
            await asyncio.sleep(1.05)

    asyncio.run(scenario())
    first, last = systemd.received[0], systemd.received[-1]
    assert first.fields == {"READY": "1", "STATUS": "3 devices ok"}
    assert last.fields == {"STOPPING": "1", "STATUS": "stopping"}
    pings = systemd.pings()
    assert 5 <= len(pings) <= 7
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(0.15 <= gap <= 0.3 for gap in gaps), gaps
    assert systemd.statuses().count("3 devices ok") == 1  # STATUS only when it changes


def test_pings_stop_while_a_vital_task_is_silent_and_resume_when_it_beats(
    systemd: SystemdSocket,
) -> None:
    watchdog = Watchdog.from_environment(environment(systemd))
    watchdog.expect("control", within_s=0.3)

    async def beating(seconds: float) -> None:
        for _ in range(round(seconds / 0.05)):
            watchdog.beat("control")
            await asyncio.sleep(0.05)

    async def scenario() -> tuple[float, float]:
        async with running(watchdog, systemd):
            await beating(0.6)
            silent_from = time.monotonic()
            await asyncio.sleep(1.0)  # the control loop hangs
            silent_to = time.monotonic()
            await beating(0.6)
        return silent_from, silent_to

    silent_from, silent_to = asyncio.run(scenario())
    pings = systemd.pings()
    # pings go on until the task has been silent for its window, then none until it beats
    assert not [t for t in pings if silent_from + 0.3 + 0.15 < t < silent_to]
    assert [t for t in pings if t < silent_from]
    assert [t for t in pings if t > silent_to]
    assert any(s.startswith("unhealthy: control silent for") for s in systemd.statuses())
    assert watchdog.health().healthy


def test_a_vital_task_that_never_beats_stops_the_pings(systemd: SystemdSocket) -> None:
    watchdog = Watchdog.from_environment(environment(systemd))
    watchdog.expect("telemetry", within_s=0.3)

    async def scenario() -> None:
        async with running(watchdog, systemd):
            await asyncio.sleep(1.0)

    asyncio.run(scenario())
    assert all(t < systemd.received[0].at + 0.45 for t in systemd.pings())
    assert "telemetry" in watchdog.health().problems[0]


def test_it_checks_on_the_wall_clocks_ticks(systemd: SystemdSocket) -> None:
    """The tick sleeps to the wall clock's tick, as the telemetry round and the MQTT
    session's keepalive check do, so that the loop wakes once for all of them."""
    phases: list[float] = []

    def status() -> str:
        phases.append(time.time() % 0.1)  # the tick is 0.1 s (half the 0.2 s ping interval)
        return "ok"

    watchdog = Watchdog.from_environment(environment(systemd), status=status)

    async def scenario() -> None:
        async with running(watchdog, systemd):
            await asyncio.sleep(0.75)

    time.sleep(0.1 - (time.time() - 0.05) % 0.1)  # start half way: a relative tick stays so
    asyncio.run(scenario())
    ticks = phases[2:]  # READY=1 and the first ping come at once
    assert len(ticks) >= 3
    assert all(phase < 0.035 for phase in ticks), ticks


def test_no_ping_while_the_loop_is_blocked_nor_right_after(systemd: SystemdSocket) -> None:
    watchdog = Watchdog.from_environment(environment(systemd), max_lag_s=0.05)

    async def scenario() -> tuple[float, float]:
        async with running(watchdog, systemd):
            await asyncio.sleep(0.5)
            blocked_from = time.monotonic()
            time.sleep(0.6)  # noqa: ASYNC251 (the point: a callback that blocks the loop)
            blocked_to = time.monotonic()
            await asyncio.sleep(0.8)
        return blocked_from, blocked_to

    blocked_from, blocked_to = asyncio.run(scenario())
    pings = systemd.pings()
    before = [t for t in pings if t <= blocked_from]
    after = [t for t in pings if t >= blocked_to]
    assert before and after
    # the tick that woke 0.6 s late saw the lag and did not ping; the next healthy one did
    assert after[0] - blocked_to >= 0.08
    assert any("event loop" in s and "late" in s for s in systemd.statuses())


def test_abstract_socket_names_start_with_an_at_sign() -> None:
    name = f"derms-edge-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.send("READY=1", "STATUS=up")
        assert sock.recv(100) == b"READY=1\nSTATUS=up"
        notifier.close()


def test_without_notify_socket_nothing_is_sent_but_health_is_checked() -> None:
    watchdog = Watchdog.from_environment({"WATCHDOG_USEC": "400000"})
    assert not watchdog.notifier.enabled
    assert watchdog.interval_s is None
    watchdog.expect("control", within_s=0.1)

    async def scenario() -> None:
        task = asyncio.create_task(watchdog.run())
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert watchdog.pings == 0
    assert not watchdog.health().healthy


def test_watchdog_pid_of_another_process_gets_ready_but_no_pings(systemd: SystemdSocket) -> None:
    env = {**environment(systemd), "WATCHDOG_PID": str(os.getpid() + 1)}
    watchdog = Watchdog.from_environment(env)
    assert watchdog.interval_s is None

    async def scenario() -> None:
        async with running(watchdog, systemd):
            await asyncio.sleep(0.5)

    asyncio.run(scenario())
    assert systemd.received[0].fields["READY"] == "1"
    assert systemd.pings() == []


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(env, pid=42) == interval


def test_notify_address() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abstract") == "\0abstract"
    assert notify_address("") is None
    assert notify_address("vsock:2:1234") is None


def test_a_socket_that_is_gone_does_not_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "nobody"))
    assert not notifier.send("WATCHDOG=1")
    assert not notifier.send("WATCHDOG=1")
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1  # logged once
