"""The control loop with signed controls required: a signed event or cancel is taken once,
fresh, and remembered across restarts; what is not signed by its role is not taken."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from derms_edge.config import parse_config
from derms_edge.devices.factory import build_coordinator
from derms_edge.devices.modbus import LinkPool
from derms_edge.northbound.commands import parse_command
from derms_edge.northbound.signed import KeyRing, sign
from derms_edge.northbound.topics import Topics
from derms_edge.runtime.control_loop import ControlLoop
from derms_edge.runtime.gateway import build_control_loop
from tests.unit.test_control_loop import Recorder

DSO = OKPKey.generate_key("Ed25519")
AGGREGATOR = OKPKey.generate_key("Ed25519")
TOPICS = Topics("derms", "site")
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
SKEW_S = 300


class Site:
    """A gateway's control loop on a fake clock, built again on the same state as a restart
    would."""

    def __init__(self, tmp_path: Path, runner: asyncio.Runner) -> None:
        self._runner = runner  # the pymodbus clients want a running loop
        for name, key in (("dso", DSO), ("aggregator", AGGREGATOR)):
            (tmp_path / f"{name}.pub.pem").write_bytes(key.as_pem(private=False))
        self.config = parse_config(
            {
                "gateway": {"id": "site", "state_dir": str(tmp_path / "state")},
                "devices": [
                    {"id": "inv1", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"}
                ],
                "control": {
                    "require_signed": True,
                    "max_clock_skew_s": SKEW_S,
                    "roles": {
                        "dso": {"primacy": 1, "keys": [str(tmp_path / "dso.pub.pem")]},
                        "aggregator": {
                            "primacy": 2,
                            "keys": [str(tmp_path / "aggregator.pub.pem")],
                        },
                    },
                },
            }
        )
        self.keys = KeyRing.from_files({n: r.keys for n, r in self.config.control.roles.items()})
        self.now = T0
        self.recorder = Recorder()
        self.loop = self.restart()

    def restart(self) -> ControlLoop:
        async def build() -> ControlLoop:
            pool = LinkPool()
            coordinators = {d.id: build_coordinator(d, pool) for d in self.config.devices}
            return build_control_loop(
                self.config,
                coordinators,
                TOPICS,
                respond=self.recorder.respond,
                publish=self.recorder.publish,
                clock=lambda: self.now,
            )

        self.loop = self._runner.run(build())
        self.loop._restore()  # what run() does first
        return self.loop

    def send(self, topic: str, payload: bytes) -> list[dict[str, Any]]:
        """The answers to one message."""
        before = len(self.recorder.responses)
        command = parse_command(TOPICS, topic, payload, False, keys=self.keys)
        assert command is not None

        async def handle() -> None:
            self.loop.handle([command])

        self._runner.run(handle())
        return self.recorder.responses[before:]


def event(mrid: str, created: datetime | None, **fields: Any) -> bytes:
    """An event from tomorrow on: nothing here needs the (unreachable) inverter to start it."""
    body: dict[str, Any] = {
        "mrid": mrid,
        "start": (T0 + timedelta(days=1)).isoformat(),
        "duration_s": 600,
        "control": {"max_w_pct": 40},
        **fields,
    }
    if created is not None:
        body["creation_time"] = created.isoformat()
    return json.dumps(body).encode()


def statuses(answers: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(a["mrid"], a["status"], a["reason"]) for a in answers]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with asyncio.Runner() as runner:
        yield Site(tmp_path, runner)


def test_a_signed_event_is_taken_once(site: Site) -> None:
    signed = sign(event("ev-1", T0), DSO)
    assert statuses(site.send(TOPICS.controls("dso"), signed)) == [
        ("ev-1", "received", None),
        ("ev-1", "scheduled", None),
    ]
    again = site.send(TOPICS.controls("dso"), signed)
    assert statuses(again) == [("ev-1", "scheduled", None)]
    assert again[0]["detail"] == "repeat of a signed message; not taken again"


def test_unsigned_and_other_roles_keys_are_not_taken(site: Site) -> None:
    answers = site.send(TOPICS.controls("dso"), event("ev-1", T0))
    answers += site.send(TOPICS.controls("dso"), sign(event("ev-2", T0), AGGREGATOR))
    assert statuses(answers) == [(None, "rejected", "unauthorized")] * 2
    assert "role dso" in answers[1]["detail"] and AGGREGATOR.thumbprint() in answers[1]["detail"]
    assert site.loop.controller.records == {}


def test_freshness_is_measured_from_creation_time(site: Site) -> None:
    stale = site.send(
        TOPICS.controls("dso"), sign(event("ev-old", T0 - timedelta(seconds=301)), DSO)
    )
    future = site.send(
        TOPICS.controls("dso"), sign(event("ev-new", T0 + timedelta(seconds=301)), DSO)
    )
    undated = site.send(TOPICS.controls("dso"), sign(event("ev-none", None), DSO))
    assert statuses(stale + future + undated) == [
        ("ev-old", "rejected", "replayed"),
        ("ev-new", "rejected", "invalid"),
        ("ev-none", "rejected", "invalid"),
    ]
    assert "301 s behind" in stale[0]["detail"]
    assert site.loop.controller.records == {}


def test_a_refused_signed_message_stays_refused_across_a_restart(site: Site) -> None:
    """Refused for being 400 s ahead; 200 s later it would pass, but it was seen."""
    ahead = sign(event("ev-1", T0 + timedelta(seconds=400)), DSO)
    assert statuses(site.send(TOPICS.controls("dso"), ahead)) == [("ev-1", "rejected", "invalid")]
    site.now = T0 + timedelta(seconds=200)
    site.restart()
    assert statuses(site.send(TOPICS.controls("dso"), ahead)) == [("ev-1", "rejected", "replayed")]
    assert site.loop.controller.records == {}


def test_a_replayed_cancel_does_not_cancel_a_resent_event(site: Site) -> None:
    site.send(TOPICS.controls("dso"), sign(event("ev-1", T0), DSO))
    cancel = sign(json.dumps({"mrid": "ev-1", "creation_time": T0.isoformat()}).encode(), DSO)
    assert statuses(site.send(TOPICS.cancel("dso"), cancel)) == [("ev-1", "cancelled", None)]
    assert statuses(site.send(TOPICS.cancel("dso"), cancel)) == [("ev-1", "cancelled", None)]
    # a week on the cancelled event is forgotten and ev-1 may be sent anew; the old cancel
    # is far outside its window
    site.now = T0 + timedelta(days=8)
    site.restart()
    body = event("ev-1", site.now, start=(site.now + timedelta(hours=1)).isoformat())
    site.send(TOPICS.controls("dso"), sign(body, DSO))
    assert statuses(site.send(TOPICS.cancel("dso"), cancel)) == [("ev-1", "rejected", "replayed")]
    assert site.loop.controller.records["ev-1"].status == "scheduled"


def test_an_unsigned_cancel_is_not_taken(site: Site) -> None:
    site.send(TOPICS.controls("dso"), sign(event("ev-1", T0), DSO))
    answers = site.send(TOPICS.cancel("dso"), json.dumps({"mrid": "ev-1"}).encode())
    assert statuses(answers) == [(None, "rejected", "unauthorized")]
    assert site.loop.controller.records["ev-1"].status == "scheduled"


def test_a_default_control_is_set_and_cleared_only_signed(site: Site) -> None:
    topic = TOPICS.default_control("dso")
    refused = site.send(topic, b'{"max_w_pct": 30}')
    assert statuses(refused) == [(None, "rejected", "unauthorized")]
    assert "dso" not in site.loop.controller.defaults
    site.send(topic, sign(b'{"max_w_pct": 30}', DSO))
    assert site.loop.controller.defaults["dso"].max_w_pct == 30
    site.send(topic, b"")  # the retained message deleted at the broker: not a clear
    assert "dso" in site.loop.controller.defaults
    site.send(topic, sign(b"", DSO))
    assert "dso" not in site.loop.controller.defaults
