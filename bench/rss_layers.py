"""Where the daemon's resident memory goes: the RSS each layer of imports adds on top of the
layers before it, in the order the daemon loads them.

    python bench/rss_layers.py [--runs 3] [--source]

Each run is a fresh interpreter that imports the layers one after the other and reads
VmRSS from /proc/self/status after each; a layer's figure is the growth it caused, so a
module that two layers share is counted in the first. The first row is the interpreter
alone (with this venv's site hooks). The SunSpec layers end with the daemon's own code (the
command run's module and the gateway); the OPC UA layers are what one OPC UA device adds on top.
Median of ``--runs`` runs per layer, MB. As the daemon runs when installed, from bytecode
(an unmeasured first run compiles it); ``--source`` compiles every module at each run instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("interpreter", ()),
    ("asyncio (ssl, libcrypto, concurrent.futures)", ("asyncio",)),
    ("pydantic and pydantic-core", ("pydantic", "pydantic.fields", "pydantic.types")),
    ("PyYAML, sqlite3", ("yaml", "sqlite3")),
    ("paho-mqtt (urllib.request, http.client)", ("paho.mqtt.client",)),
    ("pymodbus client, pysunspec2", ("pymodbus.client", "sunspec2.mb")),
    ("importlib.metadata (zipfile, csv)", ("importlib.metadata",)),
    (
        "pydantic: model building (BaseModel, schema generation)",
        ("pydantic.main", "pydantic._internal._generate_schema", "pydantic.plugin._loader"),
    ),
    ("derms_edge: configuration", ("derms_edge.config",)),
    ("derms_edge: command line (`run`)", ("derms_edge.cli", "derms_edge.cli.run")),
    ("derms_edge: gateway (runtime, devices, control)", ("derms_edge.runtime.gateway",)),
    ("cryptography (x509, hazmat)", ("cryptography.x509", "cryptography.hazmat.primitives")),
    ("asyncua (`ua`, client, server: the package loads all)", ("asyncua",)),
    ("derms_edge: OPC UA driver", ("derms_edge.devices.opcua.driver",)),
)
"""Each layer: a name, and the modules it imports."""

PROBE = """
import importlib, json, sys
def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024
layers = json.loads(sys.argv[1])
figures = [rss()]
for modules in layers[1:]:
    for name in modules:
        importlib.import_module(name)
    figures.append(rss())
print(json.dumps(figures))
"""


SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parents[1]))

from bench.workers import bytecode_env


def one_run(env: dict[str, str] | None) -> list[float]:
    """RSS (MB) after each layer, in a fresh interpreter with ``env``."""
    modules = json.dumps([list(layer) for _, layer in LAYERS])
    result = subprocess.run(
        [sys.executable, "-c", PROBE, modules],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    figures: list[float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main() -> int:
    top = argparse.ArgumentParser(description=__doc__)
    top.add_argument("--runs", type=int, default=3)
    top.add_argument("--source", action="store_true", help="no bytecode: compile at each run")
    args = top.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = None if args.source else bytecode_env(Path(cache))
        if env is not None:
            one_run(env)  # writes the bytecode
        runs = [one_run(env) for _ in range(args.runs)]
    after = [statistics.median(run[i] for run in runs) for i in range(len(LAYERS))]
    print(f"| layer | adds MB | RSS after MB (median of {args.runs}) |")
    print("|---|---|---|")
    before = 0.0
    for (name, _), total in zip(LAYERS, after, strict=True):
        print(f"| {name} | {total - before:.1f} | {total:.1f} |")
        before = total
    return 0


if __name__ == "__main__":
    sys.exit(main())
