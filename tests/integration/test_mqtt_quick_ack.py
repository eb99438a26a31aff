"""The gateway's MQTT socket acknowledges at once, so a broker with Nagle on (Mosquitto's
default ``set_tcp_nodelay false``) does not hold a control behind a delayed ACK."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from derms_edge.config import MqttSection
from derms_edge.northbound import mqtt
from tests.support.servers import Mosquitto


def sender(port: int) -> paho.Client:
    """The dispatcher's side, with TCP_NODELAY: only the gateway's socket is under test."""
    client = paho.Client(CallbackAPIVersion.VERSION2)

    def nodelay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = nodelay
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def delivery_ms(broker: Mosquitto, rounds: int = 20) -> float:
    """Median ms from a publish to the gateway's client receiving it, each right after that
    client's own QoS 1 publish was acknowledged (the broker's PUBACK is the segment a
    delayed ACK leaves unacknowledged, and Nagle then holds the next one behind it)."""
    received: list[float] = []
    got = threading.Event()
    gateway = mqtt.new_client(MqttSection(port=broker.port))

    def on_message(*_args: Any) -> None:
        received.append(time.monotonic())
        got.set()

    gateway.on_message = on_message
    gateway.connect("127.0.0.1", broker.port)
    gateway.subscribe("quick-ack/in", qos=1)
    gateway.loop_start()
    dispatcher = sender(broker.port)
    time.sleep(0.3)
    samples = []
    try:
        for _ in range(rounds):
            gateway.publish("quick-ack/out", b"response", qos=1).wait_for_publish(5)
            time.sleep(0.002)
            got.clear()
            t0 = time.monotonic()
            dispatcher.publish("quick-ack/in", b"control", qos=1)
            assert got.wait(5)
            samples.append((received[-1] - t0) * 1e3)
    finally:
        for client in (gateway, dispatcher):
            client.disconnect()
            client.loop_stop()
    return statistics.median(samples)


@pytest.mark.skipif(mqtt.TCP_QUICKACK is None, reason="TCP_QUICKACK is Linux's")
def test_a_control_is_not_held_behind_a_delayed_ack(broker: Mosquitto) -> None:
    assert delivery_ms(broker) < 20  # a delayed ACK is ~40 ms


@pytest.mark.skipif(mqtt.TCP_QUICKACK is None, reason="TCP_QUICKACK is Linux's")
def test_without_the_quick_ack_it_is(broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the test above guards against is real here: without the quick ACK it waits."""
    monkeypatch.setattr(mqtt, "TCP_QUICKACK", None)
    assert delivery_ms(broker) > 20


def test_the_gateways_socket_sends_at_once(broker: Mosquitto) -> None:
    """TCP_NODELAY: a message is written as it is handed to paho, and with Nagle a second
    small write would wait for the broker's ACK of the first."""
    gateway = mqtt.new_client(MqttSection(port=broker.port))
    gateway.connect("127.0.0.1", broker.port)
    try:
        sock = gateway.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        gateway.disconnect()
