"""Exit 0 if a TCP port accepts connections (optionally waiting for it), else 1.

Used by scripts/demo: ``python -m derms_edge.tools.port_open HOST PORT [--wait SECONDS]``.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether host:port accepts a TCP connection now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Command-line entry."""
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("host")
    args.add_argument("port", type=int)
    args.add_argument("--wait", type=float, default=0.0, help="keep trying this many seconds")
    ns = args.parse_args(argv)
    deadline = time.monotonic() + ns.wait
    while not port_open(ns.host, ns.port):
        if time.monotonic() >= deadline:
            if ns.wait:
                print(f"{ns.host}:{ns.port} did not open within {ns.wait:g} s", file=sys.stderr)
            return 1
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
