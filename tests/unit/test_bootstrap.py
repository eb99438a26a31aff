"""scripts/bootstrap.sh's find_python on a PATH holding pyenv-like shims that complain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BOOTSTRAP = Path(__file__).resolve().parents[2] / "scripts" / "bootstrap.sh"
SHIM = '#!/bin/sh\necho "pyenv: $(basename "$0"): command not found" >&2\nexit 127\n'


def shims(bin_dir: Path, *names: str) -> None:
    """A pyenv shim for each NAME: it exists on PATH but only complains when run."""
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        (bin_dir / name).write_text(SHIM)
        (bin_dir / name).chmod(0o755)


def find_python(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run find_python in bash with BIN_DIR first on PATH (then only the system's basics)."""
    return subprocess.run(
        ["bash", "-c", f'source "{BOOTSTRAP}" && find_python'],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_complaining_shims_are_skipped_without_a_word(tmp_path: Path) -> None:
    shims(tmp_path, "python3.13", "python3.12")
    (tmp_path / "python3.11").symlink_to(sys.executable)  # the one that runs (3.11+)
    done = find_python(tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "python3.11\n", "")


def test_no_usable_python_says_what_to_install(tmp_path: Path) -> None:
    shims(tmp_path, "python3.13", "python3.12", "python3.11", "python3")
    done = find_python(tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert "Python 3.11 or newer is needed" in done.stderr
    assert "sudo apt-get install python3 python3-venv" in done.stderr
    assert "pyenv:" not in done.stderr
