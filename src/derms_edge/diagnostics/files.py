"""What the gateway needs on the host's disk and devices: its state directory writable with
room for the buffer, its serial ports readable and writable, its secrets kept from others.

Access is judged for the service user (derms-edge, with the dialout group the unit adds) when
doctor runs as root and that user exists; else for whoever runs doctor.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from derms_edge.config import Config, ModbusDevice
from derms_edge.config.secrets import (
    SERVICE_GROUP,
    exposed_secrets,
    inline_secrets,
    secret_files,
    unreadable_secrets,
)
from derms_edge.diagnostics.result import Check

SERVICE_USER = "derms-edge"
SERIAL_GROUP = "dialout"
"""The group of serial ports; the unit adds it to the service user (SupplementaryGroups)."""
BUFFER_FILE = "telemetry.sqlite"
"""The buffer's file in the state directory unless telemetry.buffer_path says otherwise."""
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class User:
    """Whose access is judged: a name, uid and groups; None uid means this process."""

    name: str
    uid: int | None = None
    gids: frozenset[int] = frozenset()

    def may(self, path: Path, read: bool, write: bool) -> bool:
        """Whether this user may read and/or write ``path`` (a directory: also enter it)."""
        if self.uid is None:
            mode = (os.R_OK if read else 0) | (os.W_OK if write else 0)
            return os.access(path, mode | (os.X_OK if path.is_dir() else 0))
        info = path.stat()
        if self.uid == 0:
            return True
        if info.st_uid == self.uid:
            bits = (stat.S_IRUSR, stat.S_IWUSR, stat.S_IXUSR)
        elif info.st_gid in self.gids:
            bits = (stat.S_IRGRP, stat.S_IWGRP, stat.S_IXGRP)
        else:
            bits = (stat.S_IROTH, stat.S_IWOTH, stat.S_IXOTH)
        wanted = (bits[0] if read else 0) | (bits[1] if write else 0)
        wanted |= bits[2] if stat.S_ISDIR(info.st_mode) else 0
        return info.st_mode & wanted == wanted


def service_user() -> User:
    """The service user when running as root and it exists (with the unit's dialout), else
    this process."""
    me = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() != 0:
        return User(me)
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return User(me)
    gids = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if SERVICE_USER in g.gr_mem)}
    with contextlib.suppress(KeyError):
        gids.add(grp.getgrnam(SERIAL_GROUP).gr_gid)
    return User(SERVICE_USER, entry.pw_uid, frozenset(gids))


def _resolved(path: Path, working_dir: Path | None) -> Path:
    return path if path.is_absolute() else (working_dir or Path.cwd()) / path


def _existing(path: Path) -> Path:
    """The path, or its nearest ancestor that exists (the gateway creates the rest)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def state_directory(config: Config, user: User, working_dir: Path | None = None) -> list[Check]:
    """The state directory (and the buffer's, if elsewhere): writable, with room for the
    buffer to grow to telemetry.buffer_max_mb. ``working_dir``: the unit's, which systemd
    makes when the service starts; relative paths start there."""
    state = _resolved(config.gateway.state_dir, working_dir)
    buffer = _resolved(config.telemetry.buffer_path or state / BUFFER_FILE, working_dir)
    checks = []
    for directory in dict.fromkeys([state, buffer.parent]):
        where = _existing(directory)
        made = "" if where == directory else f" (to be created in {where})"
        if where != directory and working_dir is not None and directory.is_relative_to(working_dir):
            checks.append(
                Check.passed(
                    f"state directory {directory}: systemd makes {working_dir} for the "
                    "service (StateDirectory=) when it starts"
                )
            )
        elif not where.is_dir():
            checks.append(
                Check.failed(
                    f"state directory {directory}: {where} is not a directory",
                    "point gateway.state_dir (or telemetry.buffer_path) at a directory",
                )
            )
        elif user.may(where, read=True, write=True):
            checks.append(
                Check.passed(f"state directory {directory} writable by {user.name}{made}")
            )
        else:
            checks.append(
                Check.failed(
                    f"state directory {directory}{made} not writable by {user.name}",
                    f"chown -R {user.name} {where} (the unit's StateDirectory= does it for "
                    "/var/lib/derms-edge)",
                )
            )
    checks.append(free_space(buffer, config.telemetry.buffer_max_mb))
    return checks


def free_space(buffer: Path, buffer_max_mb: float) -> Check:
    """Room on the buffer's file system for it to grow to its limit."""
    held = buffer.stat().st_size if buffer.exists() else 0
    needed = max(0.0, buffer_max_mb * MiB - held)
    free = shutil.disk_usage(_existing(buffer.parent)).free
    title = (
        f"free space for the buffer: {free / MiB:,.0f} MB free, it may grow by "
        f"{needed / MiB:,.0f} MB more (telemetry.buffer_max_mb {buffer_max_mb:g})"
    )
    if free >= needed:
        return Check.passed(title)
    return Check.failed(
        title,
        "free space there, or lower telemetry.buffer_max_mb: a full disk stops the buffer "
        "and the schedule store",
    )


def serial_ports(config: Config, user: User) -> list[Check]:
    """Each serial port of a Modbus RTU device: present, a character device, readable and
    writable by the user."""
    ports = {
        device.serial.port: device.id
        for device in config.devices
        if isinstance(device, ModbusDevice) and device.serial is not None
    }
    checks = []
    for port, first in ports.items():
        path = Path(port)
        if not path.exists():
            checks.append(
                Check.failed(
                    f"serial port {port} (device {first}) not present",
                    "plug in the RS-485 adapter or HAT; ls -l /dev/serial/by-id/ and "
                    "dmesg | tail show the name it got",
                )
            )
        elif not stat.S_ISCHR(path.stat().st_mode):
            checks.append(
                Check.failed(
                    f"serial port {port} (device {first}) is not a character device",
                    "devices[].serial.port names the adapter's /dev entry, e.g. /dev/ttyUSB0",
                )
            )
        elif user.may(path, read=True, write=True):
            checks.append(Check.passed(f"serial port {port} readable and writable by {user.name}"))
        else:
            info = path.stat()
            checks.append(
                Check.failed(
                    f"serial port {port} ({_owner(info)}, mode "
                    f"{stat.S_IMODE(info.st_mode):04o}) not readable and writable by {user.name}",
                    f"serial ports belong to group {SERIAL_GROUP} with mode 660: "
                    f"chgrp {SERIAL_GROUP} {port}; chmod 660 {port} (a udev rule makes it "
                    f"last), and usermod -aG {SERIAL_GROUP} {user.name}",
                )
            )
    return checks


def _owner(info: os.stat_result) -> str:
    """user:group of a file, by name where the system knows them."""
    try:
        user = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        user = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"{user}:{group}"


def secrets(config: Config, path: Path) -> list[Check]:
    """The secret files the configuration names: readable by the gateway, not by others;
    and the configuration file itself when it holds secrets."""
    problems = [
        Check.failed(problem.partition("; ")[0], problem.partition("; ")[2])
        for problem in exposed_secrets(config)
    ]
    problems += [
        Check.failed(problem, f"give the file (root:{SERVICE_GROUP}, mode 640) or fix the path")
        for problem in unreadable_secrets(config)
    ]
    inline = inline_secrets(config)
    if inline and path.stat().st_mode & stat.S_IRWXO:
        problems.append(
            Check.failed(
                f"{path} holds {', '.join(inline)} and is readable by others "
                f"(mode {stat.S_IMODE(path.stat().st_mode):04o})",
                f"chmod 640 {path}; chown root:{SERVICE_GROUP} {path}",
            )
        )
    if problems:
        return problems
    named = len(list(secret_files(config)))
    if not named:
        return [Check.passed("secret files: the configuration names none")]
    return [Check.passed(f"secret files ({named}) readable by their owner and group only")]
