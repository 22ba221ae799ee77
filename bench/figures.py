"""Reading a results dict (``bench.run.run``) and formatting its numbers: shared by the report's parts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Getter = Callable[[dict[str, Any]], float | None]
Check = Callable[[dict[str, Any]], bool | None]


def dig(data: Any, *path: Any) -> Any:
    for key in path:
        if data is None:
            return None
        data = data.get(key) if isinstance(data, dict) else None
    return data


def e2e(name: str, key: str = "median") -> Getter:
    """The end-to-end scenario's latency ``key`` (ms) of the path ``name`` ("ours", "sse", "floor", ...)."""
    return lambda run: dig(run, "e2e", name, "lat", key)


def num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def per_run(runs: Sequence[dict[str, Any]], get: Getter, digits: int = 2, unit: str = "") -> str:
    """``a / b``: the value in each run."""
    return " / ".join(num(get(run), digits) + unit for run in runs)


def ratio_text(runs: Sequence[dict[str, Any]], get: Getter, anchor: Getter) -> str:
    parts = []
    for run in runs:
        value, base = get(run), anchor(run)
        parts.append("–" if value is None or not base else f"{value / base:.2f}×")
    return " / ".join(parts)


def verdict(runs: Sequence[dict[str, Any]], ok: Check) -> str:
    results = [ok(run) for run in runs]
    if any(r is None for r in results):
        return "not measured"
    if all(results):
        return "**met**"
    if not any(results):
        return "**not met**"
    return "**mixed** (met in run " + ", ".join(str(i + 1) for i, r in enumerate(results) if r) + ")"


def ratio_check(get: Getter, anchor: Getter, test: Callable[[float], bool]) -> Check:
    """A target on ``get ÷ anchor`` in one run: None (not measured) when either is missing."""

    def ok(run: dict[str, Any]) -> bool | None:
        value, base = get(run), anchor(run)
        return None if value is None or not base else test(value / base)

    return ok


def fan_step(run: dict[str, Any], target: str, watchers: int, rate: str) -> dict[str, Any] | None:
    return dig(run, "fanout", f"{target}/{watchers}", rate)


def largest_watchers(results: dict[str, Any]) -> int:
    return int(results["plan"]["fanout_watchers"][-1])


def rates_of(results: dict[str, Any]) -> list[str]:
    return [f"{r:g}" for r in results["plan"]["fanout_rates"]]


def sustained_rate(results: dict[str, Any]) -> str:
    rates = rates_of(results)
    return "10" if "10" in rates else rates[0]


def overload_rate(results: dict[str, Any]) -> str:
    return rates_of(results)[-1]


def naive_saturation(run: dict[str, Any], watchers: int, rates: list[str]) -> float | None:
    """The tutorial consumer's best delivered frame rate at ``watchers`` over all offered rates."""
    return max_fps(run, "naive", watchers, rates)


#: A step is sustained when it delivers this share of the offered frames ...
SUSTAINED_SHARE = 0.95
#: ... with a p99 latency under this (ms): the fan-out targets' own bounds.
SUSTAINED_P99_MS = 250.0


def sustainable(run: dict[str, Any], target: str, watchers: int, rates: list[str]) -> tuple[float, str] | None:
    """``(fps, rate)`` of the highest offered rate whose step delivered ≥ 95 % of its frames with p99 < 250 ms."""
    best = None
    for rate in rates:
        step = fan_step(run, target, watchers, rate)
        share, p99, fps = dig(step, "delivered_share"), dig(step, "lat", "p99"), dig(step, "fps")
        if share is None or p99 is None or fps is None:
            continue
        if share >= SUSTAINED_SHARE and p99 < SUSTAINED_P99_MS and (best is None or fps > best[0]):
            best = (fps, rate)
    return best


def max_fps(run: dict[str, Any], target: str, watchers: int, rates: list[str]) -> float | None:
    """The best delivered frame rate at ``watchers`` over all offered rates, whatever the latency."""
    values = [dig(fan_step(run, target, watchers, rate), "fps") for rate in rates]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def profile_label(prof: dict[str, Any]) -> str:
    if prof["target"] == "poll304":
        return "poll 304 (per request)"
    name = "realtime_async" if prof["target"] == "ours" else "tutorial"
    return f"{name} on {prof.get('server', 'daphne')}"
