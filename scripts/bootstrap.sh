# Sourced by scripts/demo and scripts/test: installs what the project needs on a fresh
# Debian / Raspberry Pi OS machine (Python 3.11+, apt, a shell). Safe to run again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DERMS_EDGE_VENV:-$ROOT/.venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else say "need root for: $* (install sudo or run as root)"; return 1
  fi
}

APT_UPDATED=0
apt_install() {  # apt_install PACKAGE... : installs the missing ones, running apt-get update once
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    say "missing ${missing[*]} and no apt-get here: install them with your package manager"
    return 1
  fi
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  say "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

find_python() {  # the newest python3.x on PATH that is 3.11 or newer
  # a probe's stderr is dropped: a pyenv shim for a version not selected exists on PATH but
  # says "pyenv: python3.13: command not found" when run, which is no error here
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      echo "$py"; return 0
    fi
  done
  say "Python 3.11 or newer is needed: none of python3.13, python3.12, python3.11, python3 on PATH runs as one"
  say "on Debian 12 / Raspberry Pi OS bookworm: sudo apt-get install python3 python3-venv"
  return 1
}

ensure_venv() {  # ensure_venv EXTRAS : a virtualenv with the project installed (editable)
  local extras="$1" py stamp want
  py="$(find_python)"
  if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
  fi
  [ -x "$VENV/bin/python" ] || { say "creating virtualenv $VENV"; "$py" -m venv "$VENV"; }
  stamp="$VENV/.derms-edge-installed"
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) $extras"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing derms-edge${extras:+[$extras]} into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}"
    echo "$want" > "$stamp"
  fi
}

ensure_mosquitto_binary() {
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
}

ensure_faketime() {  # the tests' NTP: libfaketime sets a process's wall clock, not its monotonic one
  compgen -G "/usr/lib/*/faketime/libfaketimeMT.so.1" >/dev/null && return 0
  apt_install faketime
}

ensure_victoria_metrics_binary() {  # the tests' server for the InfluxDB v2 write API
  command -v victoria-metrics >/dev/null && return 0
  apt_install victoria-metrics
  # the package starts a service on *:8428; the tests start their own on loopback
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now victoria-metrics >/dev/null 2>&1 || true
  fi
}

ensure_systemd_analyze() {  # the install test verifies the unit and scores its hardening offline
  command -v systemd-analyze >/dev/null && return 0
  apt_install systemd
}
