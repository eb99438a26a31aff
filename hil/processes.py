"""Real servers for the rig runner and the tests: free loopback ports, processes started and
stopped by PID."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


LOWEST_PORT = 10_000
"""Servers' ports are drawn from here up to the kernel's ephemeral range."""


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (the source ports of connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, below the kernel's ephemeral
    range: the kernel never gives it to a connection as its source port, so a server stopped
    and started again (a broker outage, a device reboot) finds its port free. A port bound
    by the kernel (bind to port 0) is in that range, and any connection made meanwhile, by
    any process, can take it."""
    # B311: spreads test servers over the ports; it guards no secret
    draw = random.Random()  # nosec B311
    for _ in range(200):
        port = draw.randrange(LOWEST_PORT, ephemeral_low())
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {LOOPBACK} in 200 draws below the ephemeral range")


def wait_port(
    port: int, timeout_s: float = 10.0, *, alive: Callable[[], bool] | None = None
) -> None:
    """Wait until 127.0.0.1:port accepts connections; with ``alive``, give up as soon as the
    process that should listen there has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"the process that should listen on {LOOPBACK}:{port} exited")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout_s} s")


def mosquitto_binary() -> str:
    """The mosquitto executable (Debian installs it in /usr/sbin)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("mosquitto is not installed: run scripts/test, which installs it")
    return found


class Process:
    """A child process started in its own session, stopped by PID."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log = log
        self._log_file = log.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.popen.wait(timeout_s)
        self._log_file.close()
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass(frozen=True)
class MosquittoTls:
    """A TLS listener that requires client certificates, names each client by its
    certificate's common name, and grants what ``acl_file`` allows (and nothing else)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    acl_file: Path

    def options(self) -> str:
        return (
            f"cafile {self.ca_file}\ncertfile {self.cert_file}\nkeyfile {self.key_file}\n"
            "require_certificate true\nuse_identity_as_username true\n"
            f"acl_file {self.acl_file}\nallow_anonymous false\nuser root\n"
        )


class Mosquitto:
    """A real Mosquitto broker on a free loopback port with a temporary config.

    ``stop`` then ``start`` serves the same port again. ``persistent``: the broker saves its
    state when stopped and loads it when started again, so a subscriber's persistent session
    (clean_session=False) and what was queued for it survive, with no limit on that queue.
    ``options``: further lines for the broker's config.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        persistent: bool = False,
        tls: MosquittoTls | None = None,
        timeout_s: float = 10.0,
        options: str = "",
    ) -> None:
        self.port = port or free_port()
        self.timeout_s = timeout_s
        """How long start waits for the port and stop for the exit (by this process's clock,
        which a scenario run speeds up)."""
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "mosquitto.conf"
        state = (
            # `user root`: a broker started as root keeps its user, so it can write here
            f"persistence true\npersistence_location {directory}/\nuser root\n"
            "max_queued_messages 0\n"
            if persistent
            else "persistence false\n"
        )
        access = "allow_anonymous true\n" if tls is None else tls.options()
        self.config.write_text(f"listener {self.port} {LOOPBACK}\n{access}{state}{options}")
        self.process: Process | None = None

    def start(self) -> Mosquitto:
        self.process = process = Process(
            [mosquitto_binary(), "-c", str(self.config)], self.directory / "mosquitto.log"
        )
        try:
            wait_port(self.port, self.timeout_s, alive=process.alive)
        except RuntimeError as exc:
            raise RuntimeError(f"mosquitto: {exc}:\n{process.output()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(self.timeout_s)
            self.process = None
