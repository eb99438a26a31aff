"""scripts/install into a scratch root: the layout, the unit systemd accepts, upgrade, uninstall.

The virtualenv is built for real: a new venv from the system's /usr/bin/python3, this checkout
built into a wheel and installed with all its dependencies by pip, as on a Raspberry Pi. pip
takes them from its wheel cache, so the first install takes about 12 s and an upgrade (the
same venv, the project reinstalled) about 4 s. Not `--no-deps` into a venv borrowing the test
venv's packages: that would not prove the service's venv is complete.

`systemd-analyze verify --root` needs the system's own units (sysinit.target and the rest)
inside the root, so the scratch root gets a copy of /usr/lib/systemd/system (900 kB); with
them it checks the installed unit file and that its ExecStart exists under the root.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install"
UNIT = "derms-edge.service"
MAX_EXPOSURE = 2.0

IN_CI = os.environ.get("CI") == "true"
"""CI runs as root with systemd-analyze installed by scripts/test: there, nothing is skipped."""

pytestmark = [
    pytest.mark.skipif(
        not IN_CI and os.geteuid() != 0, reason="scripts/install creates a user: needs root"
    ),
    pytest.mark.skipif(
        not IN_CI
        and (
            shutil.which("systemd-analyze") is None
            or shutil.which("useradd", path="/usr/sbin") is None
        ),
        reason="needs systemd-analyze and useradd (Debian: systemd, passwd)",
    ),
]


@dataclass(frozen=True)
class Installed:
    root: Path
    output: str

    @property
    def opt(self) -> Path:
        return self.root / "opt/derms-edge"

    @property
    def etc(self) -> Path:
        return self.root / "etc/derms-edge"

    @property
    def state(self) -> Path:
        return self.root / "var/lib/derms-edge"

    @property
    def unit(self) -> Path:
        return self.root / "etc/systemd/system" / UNIT

    @property
    def wants(self) -> Path:
        return self.root / "etc/systemd/system/multi-user.target.wants" / UNIT

    def ids(self, name: str, file: str) -> list[str]:
        """NAME's line in the root's passwd or group file, split at the colons."""
        for line in (self.root / "etc" / file).read_text().splitlines():
            if line.split(":")[0] == name:
                return line.split(":")
        raise AssertionError(f"{name} not in {self.root}/etc/{file}")


def install(root: Path, *args: str) -> str:
    """Run scripts/install --root ROOT ARGS; its output (stdout and stderr), asserting success."""
    done = subprocess.run(
        [str(INSTALL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def mode(path: Path) -> tuple[int, int, int]:
    """(uid, gid, permission bits) of PATH."""
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """A first install into a scratch root holding the system's units, with no site.yaml."""
    root = tmp_path_factory.mktemp("root")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    yield Installed(root, install(root))


def test_first_install_lays_out_user_code_config_dir_state_and_enabled_unit(
    installed: Installed,
) -> None:
    user = installed.ids("derms-edge", "passwd")
    group = installed.ids("derms-edge", "group")
    uid, gid = int(user[2]), int(group[2])
    assert user[6] == "/usr/sbin/nologin"
    assert "derms-edge" in installed.ids("dialout", "group")[3].split(",")

    assert mode(installed.etc) == (0, gid, 0o750)
    assert not (installed.etc / "site.yaml").exists()
    assert f"sudo derms-edge init --out {installed.etc}/site.yaml" in installed.output
    assert mode(installed.state) == (uid, gid, 0o750)
    assert mode(installed.unit) == (0, 0, 0o644)
    assert installed.unit.read_text() == (REPO / "packaging" / UNIT).read_text()
    assert installed.wants.is_symlink(), "systemctl --root enable made no wants link"

    derms_edge = installed.opt / ".venv/bin/derms-edge"
    assert os.access(derms_edge, os.X_OK)
    link = installed.root / "usr/local/bin/derms-edge"
    assert os.readlink(link) == "/opt/derms-edge/.venv/bin/derms-edge"
    assert mode(installed.opt)[0] == 0 and not mode(installed.opt)[2] & 0o022
    # a real install: the package sits in the venv, not a link back to the checkout
    packages = list(installed.opt.glob(".venv/lib/python3*/site-packages"))
    assert len(packages) == 1 and (packages[0] / "derms_edge/cli/run.py").is_file()
    assert not list(packages[0].glob("__editable__*")), "an editable install"
    assert not list(packages[0].glob("*.egg-link"))
    assert "serial" in {p.name for p in packages[0].iterdir()}, "the [serial] extra is missing"
    # what the unit's Documentation= points at is there
    docs = re.findall(r"^Documentation=file://(\S+)$", installed.unit.read_text(), re.M)
    assert docs and all((installed.root / d.lstrip("/")).is_file() for d in docs)


def test_systemd_analyze_verify_accepts_the_installed_unit(installed: Installed) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={installed.root}", UNIT],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify exits 0 on some problems (an unknown Type= value) but prints them
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_installed_unit_exposure_is_at_most_two(installed: Installed) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(installed.unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    exposed = [line.strip() for line in done.stdout.splitlines() if line.startswith("✗")]
    assert float(found[1]) <= MAX_EXPOSURE, "\n".join(exposed)


def test_reinstall_upgrades_in_place_and_uninstall_keeps_config_and_state(
    installed: Installed, tmp_path: Path
) -> None:
    """Runs last in this module: it upgrades, then removes, the fixture's install."""
    site = installed.etc / "site.yaml"
    # an upgrade with a config given: none yet, so it is installed (and passes check-config)
    output = install(installed.root, "--config", str(REPO / "configs/residential.yaml"))
    assert f"installing {REPO}/configs/residential.yaml as {site}" in output
    gid = int(installed.ids("derms-edge", "group")[2])
    assert mode(site) == (0, gid, 0o640)

    # the installer's edits, the gateway's state, a stale unit and a damaged venv
    site.write_text(site.read_text() + "# edited on site\n")
    kept_config = site.read_text()
    (installed.state / "schedule.sqlite").write_bytes(b"accepted events")
    installed.unit.write_text("[Service]\nExecStart=/bin/true\n")
    run_py = next(installed.opt.glob(".venv/lib/python3*/site-packages/derms_edge/cli/run.py"))
    run_py.unlink()
    other = tmp_path / "other.yaml"
    shutil.copy(REPO / "configs/commercial.yaml", other)

    output = install(installed.root, "--config", str(other))
    assert f"kept {site}" in output
    assert site.read_text() == kept_config
    assert (installed.state / "schedule.sqlite").read_bytes() == b"accepted events"
    assert installed.unit.read_text() == (REPO / "packaging" / UNIT).read_text()
    assert run_py.is_file(), "the upgrade did not reinstall the package"

    output = subprocess.run(
        [str(INSTALL), "--root", str(installed.root), "--uninstall"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    assert not installed.opt.exists()
    assert not (installed.root / "usr/local/bin/derms-edge").is_symlink()
    assert not installed.unit.exists() and not installed.wants.is_symlink()
    assert site.read_text() == kept_config
    assert (installed.state / "schedule.sqlite").is_file()
    assert f"kept {installed.etc}" in output and f"kept {installed.state}" in output
