"""A poll decodes only the points a reading is made of (`mapping.state_points`): the same
reading as decoding every point, on real register images and random ones."""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import combinations
from typing import Any

import pytest

from derms_edge.devices.sunspec import build_layout, decode
from derms_edge.devices.sunspec.mapping import (
    BATTERY,
    DER_MEASURE_AC,
    DER_STORAGE_CAPACITY,
    INVERTER_MODELS,
    METER_MODELS,
    STORAGE,
    kind_of,
    poll_models,
    state_points,
    to_state,
)
from derms_edge.model import DeviceKind

from .test_sunspec_codec import random_image
from .test_sunspec_real_devices import IMAGES, scan

KINDS = (DeviceKind.INVERTER, DeviceKind.METER, DeviceKind.BATTERY)
MEASUREMENT_MODELS = (DER_MEASURE_AC, *INVERTER_MODELS, *METER_MODELS)
STORAGE_MODELS = (DER_STORAGE_CAPACITY, BATTERY, STORAGE)
POLLED_MODELS = (*MEASUREMENT_MODELS, *STORAGE_MODELS)


class Recorder(dict[str, Any]):
    """A model's decoded points (none) that notes every point asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)


def chains() -> list[tuple[int, ...]]:
    """A measurement model with none, one or two of the storage models."""
    storage = [(), *((m,) for m in STORAGE_MODELS), *combinations(STORAGE_MODELS, 2)]
    return [(m, *s) for m in MEASUREMENT_MODELS for s in storage]


def test_a_reading_asks_for_exactly_the_state_points_of_each_polled_model() -> None:
    asked: dict[int, set[str]] = defaultdict(set)
    for kind in KINDS:
        for chain in chains():
            values = {model_id: Recorder() for model_id in poll_models(kind, chain)}
            to_state(kind, values)
            for model_id, points in values.items():
                assert points.asked <= state_points(model_id), (kind, chain, model_id)
                asked[model_id] |= points.asked
    assert sorted(asked) == sorted(POLLED_MODELS)
    for model_id, points in asked.items():
        assert points == state_points(model_id), model_id  # no point decoded for nothing


@pytest.mark.parametrize("name", IMAGES)
def test_real_devices_read_the_same_from_the_state_points_as_from_every_point(
    name: str,
) -> None:
    image, result, values = scan(name)
    chain = [header.model_id for header in result.models]
    kind = kind_of(chain)
    assert kind is not None
    headers = {header.model_id: header for header in result.models}
    few = {}
    for model_id in poll_models(kind, chain):
        registers = image.model(headers[model_id])
        layout = build_layout(model_id, headers[model_id].length, registers)
        assert layout is not None
        few[model_id] = decode(layout, registers, state_points(model_id))
        assert few[model_id].keys() <= state_points(model_id)
    assert few
    assert to_state(kind, few) == to_state(kind, values)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("model_id", POLLED_MODELS)
def test_decoding_the_state_points_gives_their_values_from_decoding_every_point(
    model_id: int, seed: int
) -> None:
    length, registers = random_image(model_id, random.Random(model_id * 100 + seed))
    layout = build_layout(model_id, length, registers)
    assert layout is not None
    every = decode(layout, registers)
    wanted = state_points(model_id)
    assert wanted & every.keys()
    assert decode(layout, registers, wanted) == {k: v for k, v in every.items() if k in wanted}
    assert decode(layout, registers) == every  # the full decoder is not the restricted one
