"""Fixtures for end-to-end tests: a real Mosquitto, the HIL rig, the real daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import Mosquitto
from tests.support.victoria import VictoriaMetrics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real Mosquitto on a free loopback port, stopped by PID afterwards."""
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def saving_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A Mosquitto that keeps sessions and queued messages on disk across stop and start."""
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto-saving"), persistent=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """victoria-metrics, which takes InfluxDB v2 writes, on a free loopback port."""
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria-metrics")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")
