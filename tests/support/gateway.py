"""Run the real ``derms-edge run`` daemon as a child process on a generated configuration."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.servers import Process


def write_config(path: Path, **sections: Any) -> Path:
    """Write a gateway configuration file from sections given as dictionaries."""
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return path


def start_gateway(config: Path, log: Path) -> Process:
    """Start ``derms-edge run CONFIG`` with debug-free, unbuffered logging."""
    return Process(
        [sys.executable, "-m", "derms_edge.cli", "run", str(config)],
        log,
        env={"PYTHONUNBUFFERED": "1"},
    )
