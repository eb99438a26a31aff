"""A real VictoriaMetrics for tests: it takes InfluxDB v2 writes, and its export shows what arrived.

Debian's ``victoria-metrics`` accepts influxdb-client writes on ``/api/v2/write``; each field
becomes a series ``<measurement>_<field>`` labelled with the point's tags. Samples become
readable after a flush (``/internal/force_flush``), and a new series only when its index entry
is searchable, up to about a second later: read with ``eventually``, not once.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import LOOPBACK, Process, free_port


def victoria_metrics_binary() -> str:
    """The victoria-metrics executable (Debian's package installs /usr/bin/victoria-metrics)."""
    found = shutil.which("victoria-metrics")
    if found is None:
        raise RuntimeError("victoria-metrics is not installed: run scripts/test, which installs it")
    return found


@dataclass(frozen=True, slots=True)
class Series:
    """One exported series: its name, its labels, and its samples in time order."""

    name: str
    labels: dict[str, str]
    values: list[float]
    timestamps_ms: list[int]


class VictoriaMetrics:
    """A victoria-metrics on a free loopback port, data in ``directory``; stopped by PID.

    ``stop()`` then ``start()`` restarts it on the same port with the same data.
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> VictoriaMetrics:
        self.process = Process(
            [
                victoria_metrics_binary(),
                f"-storageDataPath={self.directory / 'data'}",
                f"-httpListenAddr={LOOPBACK}:{self.port}",
            ],
            self.directory / "victoria-metrics.log",
        )
        deadline = time.monotonic() + timeout_s
        while not self._healthy():
            if not self.process.alive():
                raise RuntimeError(f"victoria-metrics exited:\n{self.process.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"victoria-metrics not healthy after {timeout_s} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM (it flushes what it accepted), then wait for the exit."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _get(self, path: str, **query: str) -> bytes:
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        with urllib.request.urlopen(f"{self.url}{path}{suffix}", timeout=30) as reply:
            body: bytes = reply.read()
            return body

    def export(self, match: str = '{__name__=~"der_.*"}') -> list[Series]:
        """Every series matching the selector, after a flush so recent samples show."""
        self._get("/internal/force_flush")
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float]]] = {}
        for line in self._get("/api/v1/export", **{"match[]": match}).splitlines():
            item = json.loads(line)
            labels = dict(item["metric"])
            key = (labels.pop("__name__"), tuple(sorted(labels.items())))
            # a series may come in several lines (one per stored block)
            samples.setdefault(key, []).extend(zip(item["timestamps"], item["values"], strict=True))
        return [
            Series(name, dict(labels), [v for _, v in sorted(pairs)], [t for t, _ in sorted(pairs)])
            for (name, labels), pairs in sorted(samples.items())
        ]
