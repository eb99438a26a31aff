"""What the benchmarks share: a process's CPU time and memory, and measuring each side in a
process of its own (so CPU and RSS are that side's alone)."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

Worker = Callable[[Path, float], Awaitable[dict[str, Any]]]


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_s() -> float:
    """User + system CPU time of this process, s."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parser(doc: str | None, workers: Mapping[str, Worker]) -> argparse.ArgumentParser:
    """The common command line: ``[mode path] [--seconds S] [--write FILE]``."""
    top = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("mode", nargs="?", default="bench", choices=["bench", *workers])
    top.add_argument("path", nargs="?", type=Path)
    top.add_argument("--seconds", type=float, default=30.0)
    top.add_argument("--write", type=Path, help="append the figures to this Markdown file")
    return top


def serve_worker(args: argparse.Namespace, workers: Mapping[str, Worker]) -> bool:
    """If this process was started as a worker: run it, print its JSON result, True."""
    worker = workers.get(args.mode)
    if worker is None:
        return False
    print(json.dumps(asyncio.run(worker(args.path, args.seconds))))
    return True


def run_worker(script: Path, mode: str, path: Path, seconds: float) -> dict[str, Any]:
    """Run ``script mode path`` in a new process; its last stdout line is the result."""
    out = subprocess.run(
        [sys.executable, str(script), mode, str(path), "--seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
        cwd=script.parents[1],
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def append(path: Path | None, text: str) -> None:
    """Print the figures, and append them to ``path`` if given."""
    print(text)
    if path is not None:
        path.write_text(path.read_text() + "\n" + text if path.exists() else text)
