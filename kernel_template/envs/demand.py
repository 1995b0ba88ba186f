"""Arrival rates over the episode: base flows per approach times a time-of-day profile."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Off-peak flows (veh/h) for the N, E, S, W approaches, and the multiplier over the
# hour (knots spread evenly from start to end, linearly interpolated): the demand
# climbs to a peak in the middle of the hour and falls back.
DEFAULT_BASE_FLOWS_VPH = (800.0, 550.0, 750.0, 500.0)
DEFAULT_PROFILE = (0.7, 1.0, 1.5, 1.9, 1.5, 1.0, 0.7)


def profile_multipliers(profile: Sequence[float], n_ticks: int) -> np.ndarray:
    """The profile's multiplier at the middle of each tick, shape (n_ticks,)."""
    knots = np.asarray(profile, dtype=np.float64)
    if knots.ndim != 1 or knots.size == 0 or np.any(knots < 0) or not np.all(np.isfinite(knots)):
        raise ValueError(
            f"demand_profile {tuple(profile)!r} must be a non-empty list of finite multipliers >= 0"
        )
    if knots.size == 1:
        return np.full(n_ticks, knots[0])
    tick_middles = (np.arange(n_ticks) + 0.5) / n_ticks
    return np.interp(tick_middles, np.linspace(0.0, 1.0, knots.size), knots)


def arrival_rates(
    flows_vph: np.ndarray, profile: Sequence[float], n_ticks: int, tick_s: float
) -> np.ndarray:
    """Expected arrivals per tick for each movement, shape (n_ticks, n_movements)."""
    per_tick = np.asarray(flows_vph, dtype=np.float64) * (tick_s / 3600.0)
    return profile_multipliers(profile, n_ticks)[:, None] * per_tick[None, :]
