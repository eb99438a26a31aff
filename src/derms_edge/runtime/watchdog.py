"""Tells systemd the gateway is alive (sd_notify), and only while it is.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a filesystem or, starting with ``@``,
an abstract AF_UNIX datagram socket) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``, the process the pings must come from). `Watchdog` sends ``READY=1`` when
it starts, ``WATCHDOG=1`` every half of ``WATCHDOG_USEC`` while the gateway is healthy,
``STATUS=`` lines saying how it is, and ``STOPPING=1`` when it is cancelled. Healthy means:

- the event loop is not lagging: the watchdog's own tick woke no more than ``max_lag_s``
  late (a loop that does not run at all cannot ping either);
- every vital task (`expect`) has called `beat` within its window.

When either fails the pings stop, so systemd kills the daemon after ``WatchdogSec`` and
``Restart=on-failure`` starts a fresh one. Without ``$NOTIFY_SOCKET`` nothing is sent, but
the checks still run and log, so a stuck task shows in the journal either way. The sd_notify
protocol is a few bytes in one datagram; no systemd library is needed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from derms_edge.aio import to_boundary

log = logging.getLogger(__name__)

DEFAULT_MAX_LAG_S = 5.0
"""How late the watchdog's tick may wake before the loop counts as stuck, s."""
TICK_S = 1.0
"""How often the health is checked (at least twice per ping), s."""


def notify_address(value: str) -> str | None:
    """The socket address in ``$NOTIFY_SOCKET``: a path, or an abstract name for ``@name``.

    None for an empty value or an address family other than AF_UNIX (``vsock:``).
    """
    if not value or value.startswith("vsock:"):
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    return value


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """How often to ping, s (half of ``$WATCHDOG_USEC``); None when systemd expects no
    pings from this process (no watchdog, or ``$WATCHDOG_PID`` names another one)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID", "")
    if watchdog_pid and watchdog_pid != str(pid):
        return None
    try:
        microseconds = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number of microseconds; no watchdog pings", usec)
        return None
    return microseconds / 2e6 if microseconds > 0 else None


class Notifier:
    """Sends sd_notify messages to one socket; every call is a no-op without one."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier for ``$NOTIFY_SOCKET`` (none set: a notifier that sends nothing)."""
        env = os.environ if environ is None else environ
        return cls(notify_address(env.get("NOTIFY_SOCKET", "")))

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; whether it went (never raises)."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError as error:
            if not self._failing:  # once per outage: systemd may be restarting itself
                log.warning("sd_notify to %r failed: %s", self.address.lstrip("\0"), error)
            self._failing = True
            return False
        if self._failing:
            log.info("sd_notify to %r works again", self.address.lstrip("\0"))
        self._failing = False
        return True

    def close(self) -> None:
        """Close the socket (a later send opens it again)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


@dataclass(frozen=True, slots=True)
class Health:
    """The verdict of one check: healthy when ``problems`` is empty."""

    problems: tuple[str, ...]
    lag_s: float
    """How late the watchdog's last tick woke, s."""

    @property
    def healthy(self) -> bool:
        """No problem found."""
        return not self.problems


class Watchdog:
    """Feeds systemd's watchdog while the event loop runs and every vital task beats.

    Wiring: ``expect(name, within_s)`` for each vital task, then that task calls
    ``beat(name)`` each time round its loop; run ``run()`` as one more task of the
    TaskGroup (it sends READY=1 at once, STOPPING=1 when cancelled). ``status`` (if given)
    is called at each ping for the ``STATUS=`` line ``systemctl status`` shows.
    """

    def __init__(
        self,
        notifier: Notifier,
        interval_s: float | None,
        *,
        max_lag_s: float = DEFAULT_MAX_LAG_S,
        status: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        """Seconds between pings; None: systemd wants none (READY, STATUS, STOPPING still go)."""
        self._max_lag_s = max_lag_s if interval_s is None else min(max_lag_s, interval_s / 2)
        self._status = status
        self._clock = clock
        self._started = clock()
        self._windows: dict[str, float] = {}
        self._beats: dict[str, float] = {}
        self._lag_s = 0.0
        self._last_status: str | None = None
        self._healthy = True
        self.pings = 0

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        max_lag_s: float = DEFAULT_MAX_LAG_S,
        status: Callable[[], str] | None = None,
    ) -> Watchdog:
        """The watchdog systemd's environment asks for: pings every ``WATCHDOG_USEC / 2``
        to ``NOTIFY_SOCKET``; without them a watchdog that only checks and logs."""
        env = os.environ if environ is None else environ
        notifier = Notifier.from_environment(env)
        interval = watchdog_interval(env, os.getpid()) if notifier.enabled else None
        return cls(notifier, interval, max_lag_s=max_lag_s, status=status)

    def expect(self, name: str, within_s: float) -> None:
        """Count ``name`` as vital: it must `beat` at least every ``within_s`` seconds
        (counted from now for its first beat)."""
        if within_s <= 0:
            raise ValueError(f"{name}: within_s must be > 0, got {within_s}")
        self._windows[name] = within_s
        self._beats.setdefault(name, self._clock())

    def beat(self, name: str) -> None:
        """``name`` is alive now (cheap: call it every time round a loop)."""
        self._beats[name] = self._clock()

    def health(self) -> Health:
        """Whether the loop and every vital task are alive now, and if not, why."""
        now = self._clock()
        problems = []
        if self._lag_s > self._max_lag_s:
            problems.append(f"event loop {self._lag_s:.1f} s late (limit {self._max_lag_s:g} s)")
        for name, window in self._windows.items():
            silent = now - self._beats.get(name, self._started)
            if silent > window:
                problems.append(f"{name} silent for {silent:.0f} s (limit {window:g} s)")
        return Health(tuple(problems), self._lag_s)

    def ready(self) -> None:
        """Tell systemd the gateway is up (``run`` does it when it starts)."""
        status = self._describe()
        if self.notifier.send("READY=1", f"STATUS={status}"):
            self._last_status = status

    def stopping(self) -> None:
        """Tell systemd the gateway is shutting down (``run`` does it when cancelled)."""
        self.notifier.send("STOPPING=1", "STATUS=stopping")

    async def run(self) -> None:
        """Send READY=1, then check every tick and ping when due and healthy; STOPPING=1
        when cancelled. Never returns otherwise."""
        self.ready()
        tick = TICK_S if self.interval_s is None else min(TICK_S, self.interval_s / 2)
        last_ping = self._clock()
        self._ping()
        try:
            while True:
                asleep = self._clock()
                # on the wall clock's ticks, with the other 1 s timers: one wake-up for all;
                # after a late wake-up a whole tick, so that the loop proves it runs again
                late = self._lag_s > self._max_lag_s
                planned = tick if late else to_boundary(tick)
                await asyncio.sleep(planned)
                self._lag_s = max(0.0, self._clock() - asleep - planned)
                health = self.health()
                self._judge(health)
                if (
                    self.interval_s is not None
                    and health.healthy
                    and self._clock() - last_ping >= self.interval_s - tick / 2
                ):
                    self._ping()
                    last_ping = self._clock()
        finally:
            self.stopping()
            self.notifier.close()

    def _ping(self) -> None:
        if self.interval_s is None:
            return
        fields = ["WATCHDOG=1"]
        status = self._describe()
        if status != self._last_status:
            fields.append(f"STATUS={status}")
        if self.notifier.send(*fields):
            self._last_status = status
            self.pings += 1

    def _judge(self, health: Health) -> None:
        """Log and show (STATUS=) the turn from healthy to not, and back."""
        if health.healthy == self._healthy:
            return
        self._healthy = health.healthy
        if health.healthy:
            log.info("watchdog: healthy again")
            return
        problems = "; ".join(health.problems)
        stop = "; watchdog pings stop" if self.interval_s is not None else ""
        log.error("watchdog: unhealthy: %s%s", problems, stop)
        status = f"unhealthy: {problems}"
        if self.notifier.send(f"STATUS={status}"):
            self._last_status = status

    def _describe(self) -> str:
        if self._status is None:
            return "running"
        try:
            return self._status()
        except Exception:  # a status line is not worth a crash
            log.exception("watchdog: the status callback failed")
            return "running"
