"""Small statistics helpers for the runner and the report."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, p99, mean and max of latencies (whatever unit they are in) and their count."""
    if not values:
        return {"n": 0, "median": None, "p99": None, "mean": None, "max": None}
    return {
        "n": len(values),
        "median": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "max": max(values),
    }


def merge_steps(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One step's figures from several client processes."""
    parts = list(parts)
    lat = [x for p in parts for x in p["lat"]]
    final_lat = [x for p in parts for x in p["final_lat"]]
    firsts = [p["first"] for p in parts if p["first"]]
    lasts = [p["last"] for p in parts if p["last"]]
    return {
        "watchers": sum(p["watchers"] for p in parts),
        "frames": sum(p["frames"] for p in parts),
        "finals": sum(p["finals"] for p in parts),
        "missing_finals": sum(p["missing_finals"] for p in parts),
        "stale": sum(p["stale"] for p in parts),
        "out_of_order": sum(p["out_of_order"] for p in parts),
        "closed": sum(p["closed"] for p in parts),
        "errors": [e for p in parts for e in p["errors"]][:5],
        "first": min(firsts) if firsts else 0.0,
        "last": max(lasts) if lasts else 0.0,
        "client_cpu": sum(p["cpu"] for p in parts),
        "lat": latency_summary(lat),
        "final_lat": latency_summary(final_lat),
    }


def ratio(value: float | None, anchor: float | None) -> float | None:
    if value is None or anchor is None or anchor == 0:
        return None
    return value / anchor


def staleness(update_times: Sequence[float], seen: Sequence[Sequence[float | None]]) -> list[float]:
    """For each update: how long until a poll showed it or a later one (ms); updates never shown are left out."""
    shown = sorted((at, t) for at, t in seen if t is not None)
    out = []
    j = 0
    for t in sorted(update_times):
        while j < len(shown) and shown[j][1] < t - 1e-6:
            j += 1
        if j == len(shown):
            break
        out.append((shown[j][0] - t) * 1000)
    return out
