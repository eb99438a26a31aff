"""A battery's state of charge that stops moving while energy goes through it is frozen.

A BMS that stopped updating, or a register map that serves a cached value, reports a
plausible SoC that no longer follows the battery: the guard would trust it while the battery
empties. Each control step adds the energy the battery's measured power moved into its cells
(charge times the efficiency, discharge over it, with their signs) since its SoC last
changed; once that net energy passes a threshold either way without any change of the SoC,
the SoC is frozen, and it counts as unknown until it moves again. The energy is net, not a
throughput: a battery that discharges and then charges back may well end where it began,
within one step of its SoC point, and that SoC is not frozen (a throughput once froze a
healthy one that charged after a discharge). The threshold is the larger of 2 % of the
capacity and two steps of the SoC point's resolution (a SoC reported in whole percent cannot
move for up to 1 % of the capacity), or what the configuration says; the efficiency the
gateway knows may be a little better than the battery's, which two steps absorb.
"""

from __future__ import annotations

from dataclasses import dataclass

from derms_edge.control.soc import SECONDS_PER_HOUR, cell_w
from derms_edge.control.views import DeviceView
from derms_edge.model import Quality

FROZEN_AFTER_CAPACITY_SHARE = 0.02
"""Energy through the battery, as a share of its capacity, that must move the SoC."""
FROZEN_AFTER_STEPS = 2
"""... or this many steps of the SoC point's resolution, whichever is more."""


@dataclass(frozen=True, slots=True)
class SocWatch:
    """One battery's SoC as last seen to move, and the net energy into its cells since, Wh
    (negative: out of them)."""

    soc_pct: float
    net_wh: float = 0.0


def watched(previous: SocWatch | None, device: DeviceView, elapsed_s: float) -> SocWatch | None:
    """The watch after one control step of ``elapsed_s`` seconds; None when there is no fresh
    SoC to watch (an unknown or stale one is not frozen, it is unknown)."""
    state = device.state
    if device.quality is not Quality.OK or state is None or state.soc_pct is None:
        return None
    if previous is None or state.soc_pct != previous.soc_pct:
        return SocWatch(state.soc_pct)
    out_w = cell_w(state.w or 0.0, device.efficiency)
    moved_wh = -out_w * max(0.0, elapsed_s) / SECONDS_PER_HOUR
    return SocWatch(previous.soc_pct, previous.net_wh + moved_wh)


def frozen_after_wh(device: DeviceView) -> float | None:
    """The energy after which an unmoved SoC counts as frozen; None without a capacity."""
    if device.soc_frozen_after_wh is not None:
        return device.soc_frozen_after_wh
    cap = device.capability
    if cap is None or cap.wh_rtg is None:
        return None
    step_pct = cap.soc_step_pct or 0.0
    share = max(FROZEN_AFTER_CAPACITY_SHARE, FROZEN_AFTER_STEPS * step_pct / 100.0)
    return share * cap.wh_rtg


def frozen(watch: SocWatch | None, device: DeviceView) -> str | None:
    """Why ``device``'s SoC counts as frozen, for people; None when it does not."""
    threshold = frozen_after_wh(device)
    if watch is None or threshold is None or abs(watch.net_wh) <= threshold:
        return None
    way = "into" if watch.net_wh > 0 else "out of"
    return (
        f"state of charge frozen at {watch.soc_pct:g} % while {abs(watch.net_wh):.0f} Wh "
        f"went {way} the battery (more than {threshold:.0f} Wh moves it)"
    )
