"""The scenario's side of MQTT: it sends what the timeline says as the DSO's roles would, and
records every response and the time of every telemetry message the gateway publishes.

One paho client with a persistent session (clean_session false, QoS 1): while the broker is
away the session's subscriptions and what arrives for it are kept by the broker (started with
persistence), so what the gateway sends from its buffer after an outage is recorded too.
Publishes made while disconnected wait in paho's queue and go out on reconnection.

A device of the gateway's configuration that the rig does not simulate is a real one (a
scenario run at --speed 1 with real hardware): its telemetry is recorded as its samples, and
its power goes into the feeder's power flow.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from hil.records import Event, Recording, Sample


class Dispatcher:
    """Publishes under the gateway's topic root and records what comes back.

    Times are simulated seconds since `t0` (the process's wall clock, which runs at the
    scenario's speed; the gateway's runs at the same).
    """

    def __init__(
        self,
        port: int,
        root: str,
        recording: Recording,
        *,
        external: frozenset[str] = frozenset(),
        v_nom: float = 230.0,
    ) -> None:
        self.root = root
        self.recording = recording
        self.external = external
        """Devices outside the rig (real ones): their telemetry is their record."""
        self.v_nom = v_nom
        self.power: dict[str, tuple[float, float]] = {}
        """The newest (W, var) of each external device, for the feeder."""
        self.t0 = time.time()
        self.reading: set[str] = set()
        """Devices whose telemetry has said quality "ok" at least once."""
        self._lock = threading.Lock()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"derms-edge-hil-{os.getpid()}",
            clean_session=False,
        )
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port, keepalive=60)
        self._client.loop_start()

    def now_s(self) -> float:
        """Simulated seconds since t0."""
        return time.time() - self.t0

    def wall(self, t_s: float) -> datetime:
        """The wall-clock time (as the gateway sees it) of scenario time t_s."""
        return datetime.fromtimestamp(self.t0, UTC) + timedelta(seconds=t_s)

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(f"{self.root}/responses", 1), (f"{self.root}/telemetry/+", 1)])

    def _on_message(self, _client: paho.Client, _userdata: Any, message: Any) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = None
        t = self.now_s()
        with self._lock:
            if message.topic.endswith("/responses") and isinstance(body, dict):
                self.recording.events.append(
                    Event(
                        t_s=t,
                        kind="response",
                        topic=message.topic,
                        mrid=body.get("mrid"),
                        status=body.get("status"),
                        reason=body.get("reason"),
                        detail=str(body.get("detail") or ""),
                        payload=message.payload.decode(errors="replace"),
                    )
                )
            elif "/telemetry/" in message.topic and isinstance(body, dict):
                self._telemetry(message.topic.rsplit("/", 1)[1], body)

    def _telemetry(self, device: str, body: dict[str, Any]) -> None:
        if body.get("quality") == "ok":
            self.reading.add(device)
        seq = body.get("seq")
        if isinstance(seq, int):
            self.recording.seqs.append(seq)
        ts = body.get("ts")
        if not isinstance(ts, str):
            return
        try:
            at = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return
        t = at - self.t0
        self.recording.telemetry.setdefault(device, []).append(t)
        if device in self.external and body.get("quality") == "ok":
            self._external_sample(device, t, body)

    def _external_sample(self, device: str, t: float, body: dict[str, Any]) -> None:
        """A real device's telemetry as a sample: what the gateway read is all there is."""
        w, var, v = body.get("w"), body.get("var"), body.get("v")
        p_w, q_var = float(w or 0.0), float(var or 0.0)
        self.power[device] = (p_w, q_var)
        soc = body.get("soc_pct")
        self.recording.samples.append(
            Sample(
                t_s=t,
                device=device,
                bus=None,
                v_pu=None if v is None else float(v) / self.v_nom,
                p_w=p_w,
                q_var=q_var,
                soc_pct=None if soc is None else float(soc),
            )
        )

    def publish(self, topic: str, payload: Any, *, retain: bool = False) -> None:
        """Publish JSON on {root}/{topic} (QoS 1) and record it as sent."""
        text = json.dumps(payload)
        self._client.publish(f"{self.root}/{topic}", text.encode(), qos=1, retain=retain)
        mrid = payload.get("mrid") if isinstance(payload, dict) else None
        self.record(Event(self.now_s(), "sent", topic=topic, mrid=mrid, payload=text))

    def heartbeat(self, role: str) -> None:
        """A heartbeat (not recorded: it would fill the timeline)."""
        self._client.publish(f"{self.root}/heartbeat/{role}", b"{}", qos=1)

    def record(self, event: Event) -> None:
        with self._lock:
            self.recording.events.append(event)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
