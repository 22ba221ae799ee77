"""The report's charts (matplotlib, imported only here: the bench extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.figures import dig, fan_step, largest_watchers, profile_label, rates_of


def _legend(ax: Any, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:  # a profile with no samples draws nothing to label
        ax.legend(**kwargs)


def charts(results: dict[str, Any], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    runs = results["runs"]
    made = []
    big, rates = largest_watchers(results), rates_of(results)
    x = [float(r) for r in rates]
    colours = {"ours": "tab:blue", "naive": "tab:orange"}
    names = {"ours": "realtime_async", "naive": "tutorial consumer"}
    for kind in results["plan"].get("fanout_servers") or ():
        if kind != "daphne":
            colours[f"ours@{kind}"], names[f"ours@{kind}"] = "tab:green", f"realtime_async on {kind}"
            names["ours"] = "realtime_async on daphne"

    if any(dig(run, "fanout") for run in runs):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        present = [t for t in colours if any(dig(run, "fanout", f"{t}/{big}") for run in runs)]
        for target in present:
            for i, run in enumerate(runs):
                style = "-" if i == 0 else "--"
                for key, marker in (("median", "o"), ("p99", "^")):
                    ys = [dig(fan_step(run, target, big, r), "lat", key) for r in rates]
                    left.plot(
                        x, ys, style, marker=marker, color=colours[target], label=f"{names[target]} {key} (run {i + 1})"
                    )
                right.plot(
                    x,
                    [dig(fan_step(run, target, big, r), "fps") for r in rates],
                    style,
                    marker="o",
                    color=colours[target],
                    label=f"{names[target]} (run {i + 1})",
                )
        sse_n, sse_rate = results["plan"].get("sse_watchers"), results["plan"].get("sse_rate")
        for kind, colour in zip(results["plan"].get("sse_servers") or (), ("tab:purple", "tab:olive"), strict=False):
            if sse_n != big:
                break
            for i, run in enumerate(runs):  # one step each, at the sustained rate: points beside the lines
                step = dig(run, "sse", f"{kind}/{big}")
                if not step:
                    continue
                fill = "none" if i else "full"
                for key, marker in (("median", "s"), ("p99", "v")):
                    left.plot([sse_rate], [dig(step, "lat", key)], marker, color=colour, fillstyle=fill,
                              label=f"SSE on {kind} {key} (run {i + 1})")  # fmt: skip
                right.plot([sse_rate], [step.get("fps")], "s", color=colour, fillstyle=fill,
                           label=f"SSE on {kind} (run {i + 1})")  # fmt: skip
        right.plot(x, [v * big for v in x], ":", color="grey", label="offered")
        left.set(
            xscale="log",
            yscale="log",
            xlabel="updates/s",
            ylabel="latency, ms",
            title=f"Fan-out to {big:,} watchers: latency",
        )
        right.set(
            xscale="log",
            yscale="log",
            xlabel="updates/s",
            ylabel="frames/s delivered",
            title=f"Fan-out to {big:,} watchers: throughput",
        )
        _legend(left, fontsize=7)
        _legend(right, fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "fanout.png", dpi=110)
        plt.close(fig)
        made.append("fanout.png")

    if any(dig(run, "worker") for run in runs):
        keys = [
            ("raw_set", "raw SET"),
            ("update_progress_hot", "update_progress\n(coalesced loop)"),
            ("update_progress_stage_hot", "… in a stage\n(coalesced loop)"),
            ("log_hot", "log()\n(coalesced loop)"),
            ("update_progress_publish", "update_progress\n(publishing)"),
            ("celery_progress_poll", "celery-progress\n(poll mode)"),
            ("async_to_sync_group_send", "async_to_sync\n(group_send)"),
            ("celery_progress_ws", "celery-progress\n(WS mode)"),
        ]
        keys = [(k, label) for k, label in keys if dig(runs[0], "worker", k)]
        fig, ax = plt.subplots(figsize=(9, 3.8))
        width = 0.8 / len(runs)
        for i, run in enumerate(runs):
            ax.bar(
                [j + i * width for j in range(len(keys))],
                [dig(run, "worker", k, "median_us") for k, _ in keys],
                width,
                label=f"run {i + 1}",
            )
        ax.set_xticks(
            [j + width * (len(runs) - 1) / 2 for j in range(len(keys))], [label for _, label in keys], fontsize=8
        )
        ax.set(yscale="log", ylabel="median µs per call", title="Worker-side cost per call")
        _legend(
            ax,
        )
        fig.tight_layout()
        fig.savefig(folder / "worker.png", dpi=110)
        plt.close(fig)
        made.append("worker.png")

    if any(dig(run, "e2e") for run in runs):
        keys = [
            ("floor", "pub/sub floor"),
            ("layer", "channel layer"),
            ("ours", "realtime_async\n(WebSocket)"),
            ("sse", "realtime_async\n(SSE)"),
            ("naive", "tutorial"),
            ("celery_progress_ws", "celery-progress WS"),
        ]
        keys = [(k, label) for k, label in keys if dig(runs[0], "e2e", k)]
        fig, ax = plt.subplots(figsize=(9, 3.6))
        width = 0.8 / (2 * len(runs))
        for i, run in enumerate(runs):
            for j, field in enumerate(("median", "p99")):
                offset = (2 * i + j) * width
                ax.bar(
                    [k + offset for k in range(len(keys))],
                    [dig(run, "e2e", k, "lat", field) for k, _ in keys],
                    width,
                    label=f"{field} (run {i + 1})",
                )
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], [label for _, label in keys])
        ax.set(ylabel="ms", title="End to end, 1 watcher")
        _legend(ax, fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "e2e.png", dpi=110)
        plt.close(fig)
        made.append("e2e.png")

    if any(dig(run, "polling", "etag") for run in runs):
        _polling_chart(plt, results, folder)
        made.append("polling.png")

    profiles = [prof for prof in results.get("profiles") or [] if prof["target"] != "poll304"]
    if profiles:
        fig, ax = plt.subplots(figsize=(10, 1.2 + 0.8 * len(profiles)))
        labels = sorted({package for prof in profiles for package, _ in prof["packages"]})
        left = [0.0] * len(profiles)
        cmap = plt.get_cmap("tab20")
        for idx, package in enumerate(labels):
            values = []
            for prof in profiles:
                share = dict(prof["packages"]).get(package, 0.0)
                values.append((prof.get("daphne_us_per_frame") or 0) * share / 100)
            ax.barh(range(len(profiles)), values, left=left, color=cmap(idx % 20), label=package)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_yticks(range(len(profiles)), [profile_label(prof) for prof in profiles])
        ax.set(xlabel="server CPU µs per frame delivered", title="Where the server spends each frame (py-spy)")
        _legend(ax, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
        fig.tight_layout()
        fig.savefig(folder / "profile.png", dpi=110)
        plt.close(fig)
        made.append("profile.png")
    return made


def _polling_chart(plt: Any, results: dict[str, Any], folder: Path) -> None:
    """Unchanged polls (304): server CPU per request and requests a second, plain Django app against the router."""
    runs = results["runs"]
    c = results["plan"]["poll_concurrency"]
    servers = list(results["plan"].get("poll_servers") or ())
    apps = (("plain", "plain Django app", "tab:orange"), ("router", "ProgressHttpRouter", "tab:blue"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / (len(apps) * len(runs))
    for a, (app, label, colour) in enumerate(apps):
        for i, run in enumerate(runs):
            offset = (a * len(runs) + i) * width
            xs = [k + offset for k in range(len(servers))]
            step = [dig(run, "polling", "etag", f"{kind}/{app}/c{c}") or {} for kind in servers]
            style = {"color": colour, "alpha": 1.0 if i == 0 else 0.6, "label": f"{label} (run {i + 1})"}
            left.bar(xs, [s.get("daphne_us_per_request") or 0 for s in step], width, **style)
            right.bar(xs, [s.get("rps") or 0 for s in step], width, **style)
    ticks = [k + 0.4 - width / 2 for k in range(len(servers))]
    for ax in (left, right):
        ax.set_xticks(ticks, servers)
    left.set(yscale="log", ylabel="server CPU µs per request", title="Unchanged poll (304): CPU per request")
    right.set(ylabel="requests/s", title=f"Unchanged poll (304): {c} keep-alive clients")
    _legend(left, fontsize=7)
    _legend(right, fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "polling.png", dpi=110)
    plt.close(fig)
