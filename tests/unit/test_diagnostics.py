"""doctor's checks one by one, on what the host tools answer and on real files: the clock,
the service, access for the service user, serial ports, room for the buffer."""

from __future__ import annotations

import grp
import os
import pty
from collections.abc import Sequence
from pathlib import Path

import pytest

from derms_edge.config import Config, parse_config
from derms_edge.diagnostics import files, system
from derms_edge.diagnostics.result import Mark


def answers(**outputs: str) -> system.Run:
    """A host whose tools answer by their name (absent ones: None)."""

    def run(command: Sequence[str]) -> str | None:
        return outputs.get(command[0])

    return run


@pytest.mark.parametrize(
    ("outputs", "mark", "said"),
    [
        ({"timedatectl": "yes\n"}, Mark.PASS, "clock synchronised"),
        ({"timedatectl": "no\n"}, Mark.FAIL, "NTPSynchronized=no"),
        ({"chronyc": "Reference ID    : 1\nLeap status     : Normal\n"}, Mark.PASS, "chrony"),
        ({"chronyc": "Leap status     : Not synchronised\n"}, Mark.FAIL, "Not synchronised"),
        ({}, Mark.WARN, "cannot tell"),
    ],
)
def test_the_clock_from_timesyncd_else_chrony_else_unknown(
    outputs: dict[str, str], mark: Mark, said: str
) -> None:
    check = system.clock(answers(**outputs))
    assert check.mark is mark and said in check.title
    assert (check.advice is None) is (mark is Mark.PASS)


def unit_state(active: str, status: str, result: str, load: str = "loaded") -> str:
    return (
        f"LoadState={load}\nActiveState={active}\nSubState=x\nExecMainStatus={status}\n"
        f"Result={result}\n"
    )


@pytest.mark.parametrize(
    ("shown", "mark", "said"),
    [
        (unit_state("active", "0", "success"), Mark.PASS, "running"),
        (unit_state("failed", "1", "exit-code"), Mark.FAIL, "exit status 1"),
        (unit_state("activating", "2", "exit-code"), Mark.FAIL, "invalid configuration"),
        (unit_state("inactive", "0", "success"), Mark.WARN, "installed, inactive"),
        (unit_state("inactive", "0", "success", load="not-found"), Mark.WARN, "not installed"),
        (None, Mark.WARN, "cannot tell"),
    ],
)
def test_the_service_and_how_its_last_run_ended(shown: str | None, mark: Mark, said: str) -> None:
    check = system.unit(lambda _command: shown)
    assert check.mark is mark and said in check.title


def test_access_is_judged_by_owner_then_group_then_others(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    os.chown(directory, 4242, 4343)
    directory.chmod(0o750)
    owner = files.User("owner", 4242, frozenset())
    member = files.User("member", 5000, frozenset({4343}))
    other = files.User("other", 5001, frozenset())
    assert owner.may(directory, read=True, write=True)
    assert not member.may(directory, read=True, write=True)  # group may read, not write
    assert member.may(directory, read=True, write=False)
    assert not other.may(directory, read=True, write=False)


def config_with_port(tmp_path: Path, port: str, **telemetry: object) -> Config:
    return parse_config(
        {
            "gateway": {"id": "site", "state_dir": str(tmp_path / "state")},
            "devices": [
                {"id": "m1", "kind": "meter", "protocol": "sunspec", "serial": {"port": port}}
            ],
            "telemetry": telemetry,
        }
    )


def test_a_serial_port_must_be_there_and_open_to_the_dialout_group(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        port = os.ttyname(follower)
        config = config_with_port(tmp_path, port)
        dialout = grp.getgrnam("dialout").gr_gid
        service = files.User("derms-edge", 4242, frozenset({dialout}))
        os.chown(port, 0, 0)
        os.chmod(port, 0o600)
        (check,) = files.serial_ports(config, service)
        assert check.mark is Mark.FAIL and "not readable and writable by derms-edge" in check.title
        assert check.advice is not None and "chgrp dialout" in check.advice
        os.chown(port, 0, dialout)
        os.chmod(port, 0o660)
        (check,) = files.serial_ports(config, service)
        assert check.mark is Mark.PASS
        (missing,) = files.serial_ports(
            config_with_port(tmp_path, "/dev/ttyUSB-not-here"),
            service,
        )
        assert missing.mark is Mark.FAIL and "not present" in missing.title
    finally:
        os.close(leader)
        os.close(follower)


def test_the_state_directory_for_the_service_user_and_room_for_the_buffer(
    tmp_path: Path,
) -> None:
    config = config_with_port(tmp_path, "/dev/null", buffer_max_mb=64)
    tmp_path.chmod(0o755)
    stranger = files.User("derms-edge", 4242, frozenset())
    writable, room = files.state_directory(config, stranger)
    assert writable.mark is Mark.FAIL and "not writable by derms-edge" in writable.title
    assert writable.advice is not None and "chown -R derms-edge" in writable.advice
    assert room.mark is Mark.PASS
    no_room = files.free_space(tmp_path / "telemetry.sqlite", buffer_max_mb=1e12)
    assert no_room.mark is Mark.FAIL
    assert no_room.advice is not None and "buffer_max_mb" in no_room.advice


def test_a_state_directory_systemd_makes_at_the_first_start_is_not_a_fault(
    tmp_path: Path,
) -> None:
    """Before the service first started, /var/lib/derms-edge (StateDirectory=) is not there
    yet; a relative state_dir lands in it."""
    unit_dir = tmp_path / "var-lib-derms-edge"
    device = {"id": "m1", "kind": "meter", "protocol": "sunspec", "host": "127.0.0.1"}
    config = parse_config({"gateway": {"id": "site", "state_dir": "state"}, "devices": [device]})
    stranger = files.User("derms-edge", 4242, frozenset())
    tmp_path.chmod(0o755)
    made, _room = files.state_directory(config, stranger, unit_dir)
    assert made.mark is Mark.PASS and "StateDirectory=" in made.title
    assert str(unit_dir / "state") in made.title
    elsewhere, _room = files.state_directory(config, stranger, None)  # relative to here
    assert str(Path.cwd() / "state") in elsewhere.title
