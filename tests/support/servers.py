"""Real servers for tests: the rig runner's (hil.processes), under the names tests import."""

from hil.processes import (
    LOOPBACK,
    Mosquitto,
    MosquittoTls,
    Process,
    free_port,
    mosquitto_binary,
    wait_port,
)

__all__ = [
    "LOOPBACK",
    "Mosquitto",
    "MosquittoTls",
    "Process",
    "free_port",
    "mosquitto_binary",
    "wait_port",
]
