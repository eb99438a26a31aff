"""Simulated time faster than real time, for the real daemon too: libfaketime's speed-up.

`derms-edge hil run --speed N` runs itself again under libfaketime (``FAKETIME="+0 xN"``):
every clock the process reads (wall and monotonic) runs N times faster, and every wait
(sleep, poll, epoll, select) is N times shorter. The children it starts (the broker, the
gateway) inherit it, and libfaketime shares the clock's start between a parent and its children
through shared memory, so all of them read the same simulated time. Nothing in the gateway
changes: it runs its own code at N times the pace.

The price: N times the CPU per wall second. A scenario runs as fast as the machine keeps up;
the report states the speed achieved, from the real clock (`real_seconds`).
"""

from __future__ import annotations

import glob
import os
import sys
from typing import NoReturn

SPEED_ENV = "DERMS_EDGE_HIL_SPEED"
"""Set in the environment of a run under libfaketime: the speed it runs at."""
LIBRARY_GLOBS = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
)


class TimewarpUnavailable(RuntimeError):
    """libfaketime is not installed."""


def library() -> str:
    """The multi-threaded libfaketime (the rig runs a thread), or TimewarpUnavailable."""
    for pattern in LIBRARY_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise TimewarpUnavailable(
        "running faster than real time needs libfaketime: apt-get install faketime "
        "(scripts/test and scripts/demo install it), or run with --speed 1"
    )


def warped_speed() -> float:
    """The speed this process runs at: 1 unless it was started by `rerun_warped`."""
    return float(os.environ.get(SPEED_ENV, "1"))


def rerun_warped(speed: float, argv: list[str]) -> NoReturn:
    """Replace this process with ``python -m hil ARGV`` under libfaketime at ``speed``."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [library(), env.get("LD_PRELOAD", "")]))
    env["FAKETIME"] = f"+0 x{speed:g}"
    env[SPEED_ENV] = f"{speed:g}"
    env.pop("FAKETIME_NO_CACHE", None)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "hil", *argv], env)


def real_seconds() -> float:
    """Seconds since boot from /proc/uptime, which libfaketime does not touch (10 ms steps)."""
    with open("/proc/uptime") as uptime:
        return float(uptime.read().split()[0])
