"""Replay devices: serve a captured register image, without physics."""

from __future__ import annotations

import json
from pathlib import Path

from sunspec2.device import Model, get_model_def

from hil.devices.base import SimulatedDevice
from hil.image import PointChange, RegisterImage, SunSpecImage
from hil.spec import ReplaySpec, resolve_file


class ReplayDevice(SimulatedDevice):
    """Serves a captured image: a raw register list (read-only, byte-exact) or a pysunspec2
    device JSON (decoded into models, writes vetted but without physics)."""

    kind = "replay"
    spec: ReplaySpec

    def _power_on_image(self) -> RegisterImage:
        data = json.loads(resolve_file(self.spec.file, Path.cwd()).read_text())
        if "registers" in data:
            return RegisterImage(int(data["base"]), [int(r) for r in data["registers"]])
        models = []
        for values in data["models"]:
            if values["ID"] == 0xFFFF:
                break
            get_model_def(values["ID"])  # raises for a model pysunspec2 does not define
            models.append(Model(values["ID"], data=values))
        return SunSpecImage(models, self.spec.base)

    def refresh(self) -> None:
        """Nothing to step: the image is static."""

    def _apply(self, changes: list[PointChange]) -> None:
        """Accepted writes only change the image."""

    def _reset_controls(self) -> None:
        """No controls besides the image."""
