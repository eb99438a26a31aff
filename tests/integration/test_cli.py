"""The command line against real servers: discover on the rig, the rig's own entry point."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from derms_edge.cli import main
from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.servers import Process, free_port, wait_port


@pytest.fixture(scope="module")
def modbus_gateway() -> Iterator[RigThread]:
    """Three units behind one Modbus TCP port, as an RS485 gateway: PV, battery, PV 1547."""
    spec = RigSpec.model_validate(
        {
            "devices": [
                {"id": "u1", "type": "pv_legacy", "unit_id": 1, "gateway": "gw"},
                {"id": "u2", "type": "battery", "unit_id": 2, "gateway": "gw"},
                {"id": "u4", "type": "pv_1547", "unit_id": 4, "gateway": "gw", "base": 50000},
            ]
        }
    )
    with RigThread(spec) as rig:
        yield rig


def test_discover_lists_models_and_prints_a_devices_snippet(
    modbus_gateway: RigThread, capsys: pytest.CaptureFixture[str]
) -> None:
    port = modbus_gateway.port("u1")
    code = main(
        [
            "discover",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--unit-ids",
            "1-5",
            "--timeout",
            "0.3",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    out = captured.out
    assert "unit 1: SunSpec base 40000" in out
    assert "unit 4: SunSpec base 50000" in out
    assert "unit 3" not in out and "unit 5" not in out
    assert "     103  inverter_three_phase" in out
    assert "     802  battery" in out
    assert "     701  DERMeasureAC" in out
    assert "scanning [" in captured.err and "5/5, found 3" in captured.err  # progress bar
    snippet = yaml.safe_load(out[out.index("devices:") :])
    kinds = {d["unit_id"]: d["kind"] for d in snippet["devices"]}
    assert kinds == {1: "inverter", 2: "battery", 4: "inverter"}
    assert all(d["port"] == port and d["protocol"] == "sunspec" for d in snippet["devices"])
    # the snippet is valid configuration as it stands
    from derms_edge.config import parse_config

    parse_config({"gateway": {"id": "g"}, **snippet})


def test_discover_says_when_nothing_answers(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["discover", "--host", "127.0.0.1", "--port", str(port), "--timeout", "0.2"]) == 1
    assert f"no SunSpec device answered at 127.0.0.1:{port}" in capsys.readouterr().out


def test_discover_rejects_bad_unit_ids(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discover", "--host", "127.0.0.1", "--unit-ids", "1-300"]) == 2
    assert "--unit-ids: '1-300': unit ids go from 0 to 247" in capsys.readouterr().err


def test_the_rig_runs_from_the_command_line(tmp_path: Path) -> None:
    port = free_port()
    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(
        yaml.safe_dump({"devices": [{"id": "pv", "type": "pv_legacy", "port": port}]})
    )
    rig = Process(
        [sys.executable, "-m", "derms_edge.cli", "hil", "--rig", str(rig_file)],
        tmp_path / "rig.log",
    )
    try:
        wait_port(port, 20)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "derms_edge.cli",
                "discover",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert "unit 1: SunSpec base 40000" in out
    finally:
        rig.signal(signal.SIGINT)
        assert rig.popen.wait(15) == 0
    assert f"127.0.0.1:{port}" in rig.output()
