"""What the benchmarks share: a process's CPU time and memory, measuring each side in a
process of its own (so CPU and RSS are that side's alone), the HIL rig in its own process,
the spread of several runs, and writing a benchmark's section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hil.processes import wait_port

Worker = Callable[[Path, float], Awaitable[dict[str, Any]]]


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def bytecode_env(cache: Path) -> dict[str, str]:
    """The environment of a measured process that runs as installed: with bytecode. pip
    compiles every module when it installs derms-edge (docs/deployment.md), so a deployed
    gateway never compiles its sources at start; a source checkout run with
    PYTHONDONTWRITEBYTECODE=1 does, at every start, which costs time and about 1 MB of peak
    RSS (the compiler's memory). The bytecode goes to ``cache`` (PYTHONPYCACHEPREFIX), not
    into the tree; the first process to import a module writes it, so run each configuration
    once, unmeasured, first."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


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


def write_section(path: Path | None, text: str) -> None:
    """Print the figures; in ``path`` if given, put them in place of the section with the
    same ``## `` heading (the text's first line) if there is one, else append them."""
    print(text)
    if path is None:
        return
    old = path.read_text() if path.exists() else ""
    heading = text.lstrip("\n").split("\n", 1)[0]
    start = old.find(heading + "\n") if heading.startswith("## ") else -1
    if start < 0:
        path.write_text(old + "\n" + text if old else text)
        return
    end = old.find("\n## ", start + len(heading))
    tail = old[end + 1 :] if end >= 0 else ""
    path.write_text(old[:start] + text.rstrip("\n") + "\n" + ("\n" + tail if tail else ""))


def spread(values: Sequence[float], fmt: str) -> str:
    """min - median - max of the runs (the value alone after one run)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return format(ordered[0], fmt)
    return " - ".join(format(v, fmt) for v in (ordered[0], statistics.median(ordered), ordered[-1]))


@contextmanager
def rig_serving(
    rig_file: Path, ports: Iterable[int], *, timeout_s: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """The HIL rig of ``rig_file`` in a process of its own, its ``ports`` answering;
    terminated on the way out."""
    rig = subprocess.Popen(
        [sys.executable, "-m", "hil", "--rig", str(rig_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        for port in set(ports):
            wait_port(port, timeout_s)
        yield rig
    finally:
        rig.terminate()
        rig.wait(30)
