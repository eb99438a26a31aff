"""What the host tells: whether its clock is synchronised, and the systemd unit's state. Both
ask a system tool (timedatectl, chronyc, systemctl) through ``run``, which returns the tool's
output, or None when the tool is missing or fails (no systemd in a container, say)."""

from __future__ import annotations

import shutil

# B404: fixed command lines of system tools, no shell, no outside input
import subprocess  # nosec B404
from collections.abc import Callable, Sequence
from pathlib import Path

from derms_edge.diagnostics.result import Check

Run = Callable[[Sequence[str]], str | None]
"""Runs a system tool: its standard output, or None when it is missing or fails."""

UNIT = "derms-edge"
"""The systemd unit of the gateway (packaging/derms-edge.service)."""
TOOL_TIMEOUT_S = 5.0


def run_tool(command: Sequence[str]) -> str | None:
    """The standard output of a system tool; None when it is missing, fails or hangs."""
    if shutil.which(command[0]) is None:
        return None
    try:  # B603: a fixed command line of this module's, no shell
        done = subprocess.run(  # nosec B603
            list(command), capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def clock(run: Run = run_tool) -> Check:
    """Whether the clock is synchronised: event windows and revert timers depend on it."""
    advice = (
        "controls start and end by the clock: enable time synchronisation "
        "(timedatectl set-ntp true, or install chrony) and let it reach an NTP server"
    )
    synced = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if synced is not None and synced.strip() in ("yes", "no"):
        if synced.strip() == "yes":
            return Check.passed("clock synchronised (systemd-timesyncd or NTP, timedatectl)")
        return Check.failed("clock not synchronised (timedatectl: NTPSynchronized=no)", advice)
    tracking = run(["chronyc", "tracking"])
    if tracking is not None:
        leap = _field(tracking, "Leap status")
        if leap == "Normal":
            return Check.passed("clock synchronised (chrony: leap status Normal)")
        return Check.failed(f"clock not synchronised (chrony: leap status {leap})", advice)
    return Check.warning(
        "clock: cannot tell whether it is synchronised (neither timedatectl nor chronyc answered)",
        "check by hand that the clock is right and kept right by NTP",
    )


def _field(text: str, name: str) -> str | None:
    """The value of a ``name : value`` line."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def working_directory(run: Run = run_tool) -> Path | None:
    """The unit's working directory (where a relative state_dir lands), when systemd knows
    the unit."""
    shown = run(["systemctl", "show", UNIT, "-p", "WorkingDirectory", "--value"])
    if shown is None or not shown.strip():
        return None
    return Path(shown.strip().lstrip("!-"))


def unit(run: Run = run_tool) -> Check:
    """The systemd unit: installed, running, and how the last run ended."""
    shown = run(
        ["systemctl", "show", UNIT, "-p", "LoadState,ActiveState,SubState,ExecMainStatus,Result"]
    )
    if shown is None:
        return Check.warning(
            f"service: cannot tell ({UNIT}.service; systemd does not answer here)",
            "on the gateway itself: systemctl status derms-edge",
        )
    state = {key: value for key, _, value in (line.partition("=") for line in shown.splitlines())}
    if state.get("LoadState") != "loaded":
        return Check.warning(
            f"service: {UNIT}.service is not installed",
            "install it to run the gateway unattended: sudo ./scripts/install (docs/deployment.md)",
        )
    active, result = state.get("ActiveState"), state.get("Result")
    status = state.get("ExecMainStatus", "0")
    journal = f"journalctl -u {UNIT} -n 50 says why"
    if active == "active":
        return Check.passed(f"service: {UNIT}.service running")
    if status == "2":
        return Check.failed(
            f"service: {UNIT}.service {active}; its last run exited 2 (invalid configuration)",
            f"derms-edge check-config /etc/derms-edge/site.yaml, then systemctl restart {UNIT}",
        )
    if active == "failed" or result not in (None, "success"):
        return Check.failed(
            f"service: {UNIT}.service {active}, last run: {result}, exit status {status}",
            f"{journal}; then systemctl restart {UNIT}",
        )
    return Check.warning(
        f"service: {UNIT}.service installed, {active}",
        f"start it, and at every boot: systemctl enable --now {UNIT}",
    )
