"""Revert timers (SunSpec *RvrtTms): a control falls back by itself when the controller stops
writing it, timed in simulated seconds."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from hil.devices.models import as_float
from hil.image import PointChange, SunSpecImage, Value

Fallback = Callable[[SunSpecImage], Mapping[str, Value]]
"""The points (of the rule's model) a control takes when its timer expires, read off the image."""


@dataclass(frozen=True, slots=True)
class RevertRule:
    """One revert timer of a SunSpec control group.

    Any accepted client write to a point of `model_id` whose name starts with one of `group`
    (re)starts the timer for `tms` seconds while the `enable` point has a bit of `enable_mask`
    set; `tms` = 0 means no timer. On expiry the image takes `fallback(image)`; `rem`, if the
    model has one, shows the whole seconds left (0 when the timer is not running).
    """

    model_id: int
    group: tuple[str, ...]
    tms: str
    enable: str
    fallback: Fallback
    rem: str | None = None
    enable_mask: int = 1

    def touched_by(self, changes: Sequence[PointChange]) -> bool:
        """Whether the changes include a point of this control group."""
        return any(c.model_id == self.model_id and c.name.startswith(self.group) for c in changes)


def fixed(values: Mapping[str, Value]) -> Fallback:
    """A fallback to constant values."""
    return lambda _image: values


def disabling(model_id: int, group: str, tms: str, enable: str) -> RevertRule:
    """A timer over the points named group* whose control is disabled (enable = 0) on expiry."""
    return RevertRule(model_id, (group,), tms, enable, fixed({enable: 0}))


def copied(model_id: int, sources: Mapping[str, str]) -> Fallback:
    """A fallback where each point takes the value of another point, e.g. X <- XRvrt."""
    return lambda image: {name: image.get(model_id, src) for name, src in sources.items()}


class RevertTimers:
    """The revert timers of one device: deadlines in simulated seconds and reverts counted."""

    def __init__(self, rules: Sequence[RevertRule]) -> None:
        self.rules = tuple(rules)
        self.expired = 0  # timers that ran out since power-on
        self._deadlines: dict[int, float] = {}  # rule index -> simulated expiry time, s

    def restart(self, image: SunSpecImage, changes: Sequence[PointChange], t: float) -> None:
        """After accepted client writes at time t: (re)start or stop the timers they touch."""
        for index, rule in enumerate(self.rules):
            if not rule.touched_by(changes):
                continue
            tms = as_float(image.get(rule.model_id, rule.tms))
            enabled = int(as_float(image.get(rule.model_id, rule.enable))) & rule.enable_mask
            if tms > 0 and enabled:
                self._deadlines[index] = t + tms
            else:
                self._deadlines.pop(index, None)

    def expire(self, image: SunSpecImage, t: float) -> Iterator[tuple[float, list[PointChange]]]:
        """Revert, earliest first, every control whose timer ran out by time t.

        Each revert is written into the image only when the iteration reaches it, and yields
        (its expiry time, the points it changed), so the caller can step its physics to the
        expiry before applying the change.
        """
        while due := [(d, i) for i, d in self._deadlines.items() if d <= t]:
            deadline, index = min(due)
            del self._deadlines[index]
            rule = self.rules[index]
            values = dict(rule.fallback(image))
            image.update(rule.model_id, values)
            self.expired += 1
            yield (
                deadline,
                [
                    PointChange(rule.model_id, name, image.get(rule.model_id, name))
                    for name in values
                ],
            )

    def show_remaining(self, image: SunSpecImage, t: float) -> None:
        """Write the whole seconds each timer has left into its remaining-time point."""
        for index, rule in enumerate(self.rules):
            if rule.rem is not None:
                deadline = self._deadlines.get(index)
                left = 0 if deadline is None else math.ceil(deadline - t)
                image.set(rule.model_id, rule.rem, left)
