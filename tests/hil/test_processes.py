"""The rig's and the tests' servers listen on ports the kernel never hands out as a
connection's source port, so one stopped and started again finds its port free."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hil.processes import LOOPBACK, Mosquitto, ephemeral_low, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_free() -> None:
    low = ephemeral_low()
    ports = {free_port() for _ in range(50)}
    assert all(1024 <= port < low for port in ports)
    assert len(ports) > 40  # drawn, not the same one again and again
    for port in ports:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, port))


def test_a_broker_that_cannot_listen_is_reported_at_once_with_its_log(tmp_path: Path) -> None:
    """A socket bound to the port (as a connection's source port would be, had the port been
    the kernel's to hand out): Mosquitto exits, and start says so with its log at once, not
    after waiting out its timeout."""
    with socket.socket() as taken:
        taken.bind((LOOPBACK, free_port()))
        broker = Mosquitto(tmp_path, port=taken.getsockname()[1], timeout_s=60)
        with pytest.raises(RuntimeError, match=r"mosquitto: the process .* exited") as caught:
            broker.start()
    assert "Address already in use" in str(caught.value)
