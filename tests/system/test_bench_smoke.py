"""The benchmark harness (``python -m bench --quick``) runs every scenario and counts right.

Correctness only, never timing: every watcher gets every final state, coalescing
keeps the last update, every contender's frames arrive in order, the polling
endpoints answer what they should. The celery-progress anchors, the profile
and the charts need the ``bench`` extra, which ``dev`` (and so ``./run.sh test``)
installs: nothing here is skipped.
"""

from __future__ import annotations

import pytest

from bench import run as bench

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results():
    return bench.run(bench.QUICK, skip_optional=False)


def test_every_scenario_ran(results):
    (run,) = results["runs"]
    assert set(run) == set(bench.SCENARIOS)
    assert results["skipped"] == []


def test_worker_side_costs_and_coalescing(results):
    worker = results["runs"][0]["worker"]
    keys = ("raw_set", "update_progress_publish", "update_progress_untracked", "async_to_sync_group_send", "launch")
    for key in (*keys, "launch_locked", "celery_apply_async", "log_publish"):
        assert worker[key]["n"] > 0, key
    for key in ("update_progress_hot", "update_progress_stage_hot", "log_hot"):
        hot = worker[key]
        assert hot["last_kept"], f"coalescing must keep the last update ({key})"
        assert 1 <= hot["writes"] < hot["calls"], (key, hot)
    assert worker["log_hot"]["lines_numbered"] == worker["log_hot"]["calls"], worker["log_hot"]


def _assert_complete(step, *, every_frame: bool, label: str):
    assert step["missing_finals"] == 0, (label, step)
    assert step["out_of_order"] == 0, (label, step)
    assert step["errors"] == [] and step["closed"] == 0, (label, step)
    if every_frame:
        assert step["frames"] == step["sent"] * step["watchers"], (label, step)
    else:  # realtime_async may skip intermediate states under load, never the final one
        assert 0 < step["frames"] <= step["sent"] * step["watchers"], (label, step)


def test_end_to_end_one_watcher(results):
    e2e = results["runs"][0]["e2e"]
    expected = {"floor", "layer", "ours", "naive"} | {"celery_progress_ws"}
    assert expected <= set(e2e)
    for name in expected:
        _assert_complete(e2e[name], every_frame=True, label=name)
        assert e2e[name]["lat"]["n"] == e2e[name]["sent"]


def test_fan_out_every_watcher_gets_the_final_state(results):
    fanout = results["runs"][0]["fanout"]
    for target in ("ours", "naive"):
        for watchers in bench.QUICK.fanout_watchers:
            block = fanout[f"{target}/{watchers}"]
            for rate in bench.QUICK.fanout_rates:
                step = block[f"{rate:g}"]
                assert step["watchers"] == watchers
                _assert_complete(step, every_frame=target == "naive", label=f"{target}/{watchers}@{rate}")


def test_fan_out_with_log_lines():
    """``--only fanout_log`` (not in the default set): the same step without, then with a log line per update."""
    only = bench.run(bench.QUICK, scenarios=("fanout_log",), skip_optional=False)
    (run,) = only["runs"]
    block = run["fanout_log"][f"ours/{bench.QUICK.fanout_watchers[-1]}"]
    for key in ("10", "10+log"):
        _assert_complete(block[key], every_frame=False, label=key)


def test_groups():
    """``--only groups`` (not in the default set): a part's cost beside a plain task's, the launch beside
    ``apply_async``, and the parent's records under load: at most ``PROGRESS_RATE`` a second, exact final counts."""
    only = bench.run(bench.QUICK, scenarios=("groups",), skip_optional=False)
    (run,) = only["runs"]
    groups = run["groups"]
    cost = groups["cost"]
    for key in ("group_update_plain", "group_hot_plain"):
        assert cost[key]["n"] > 0, key
    for size in bench.QUICK.group_sizes:
        part = cost[f"group_update_part_{size}"]
        assert part["n"] > 0 and part["parent_running"] == 2, (size, part)  # it and the quiet part
        assert part["parent_writes"] == part["n"], f"every publishing call publishes the parent ({size}): {part}"
        assert cost[f"group_quiet_part_{size}"]["n"] > 0
        assert cost[f"group_hot_part_{size}"]["last_kept"], size
    launch = groups["launch"]
    for key in ("apply_async", "launch_async_task", "launch_async_group"):
        assert launch[key]["median_s"] > 0, key
    assert launch["purged"] >= 2 * bench.QUICK.group_launch_parts  # the messages did reach the nowhere queue
    rate = groups["rate"]
    assert rate["missing_finals"] == 0 and rate["out_of_order"] == 0 and rate["errors"] == [], rate
    assert rate["counts_exact"] and rate["finals_agree"], rate
    assert 1 <= rate["most_per_s_written"] <= 10, rate
    assert rate["part_writes"] > rate["parts"], rate


def test_redis_cost():
    """``--only redis_cost`` (not in the default set): Redis' commands per update for each configuration on both
    layers in one run, the floor two; on RedisChannelLayer every watching server adds its own, on
    RedisPubSubChannelLayer an update is one transaction whatever the servers; every watcher served; the report."""
    from bench import redis_cost

    only = bench.run(bench.QUICK, scenarios=("redis_cost",), skip_optional=False)
    (run,) = only["runs"]
    cost = run["redis_cost"]
    assert 1.9 <= cost["floor"]["calls"] <= 2.2, cost["floor"]  # SET + PUBLISH
    for key, row in cost.items():
        if key == "seconds":
            continue
        assert row["quiet"], key
        assert row["usec"] > 0 and row["client_calls"] <= row["calls"], (key, row)
        if row["delivery"] is not None:
            assert row["delivery"]["missing_finals"] == 0 and row["delivery"]["out_of_order"] == 0, (key, row)
    layered = [cost[f"ours_core/{k}"]["calls"] for k in bench.QUICK.redis_cost_servers]
    assert layered == sorted(layered) and layered[0] < layered[-1], layered
    assert cost["ours_core/1"]["commands"]["bzpopmin"]["calls"] > 0
    direct = [cost[f"ours/{k}"] for k in bench.QUICK.redis_cost_servers]
    # One WATCHed transaction (MULTI, EXEC, WATCH, HMGET from the client; HSET, PUBLISHes, EXISTS inside),
    # whatever the servers; no script once the writer's connection watches the task.
    assert all(3.9 <= row["client_calls"] <= 4.2 for row in direct), direct
    assert all(row["commands"]["exec"]["calls"] >= 0.95 for row in direct), direct
    assert all(row["commands"].get("evalsha", {}).get("calls", 0) <= 0.05 for row in direct), direct
    assert all("bzpopmin" not in row["commands"] for row in direct), direct
    assert cost["ours/1"]["commands"]["publish"]["nested_calls"] > 0
    assert cost["ours/1@busy"]["rate"] > cost["ours/1"]["rate"]
    text = "\n".join(redis_cost.section(only))
    assert "| realtime_async `update_progress`, RedisPubSubChannelLayer, 1 server watching |" in text
    assert "| realtime_async `update_progress`, RedisChannelLayer (layered, as before), 1 server watching |" in text
    assert "`BZPOPMIN`" in text


def test_many_tasks_and_idle_memory(results):
    multi = results["runs"][0]["multi"]
    for target in ("ours", "naive"):
        assert multi[target]["watchers"] == bench.QUICK.multi_tasks * bench.QUICK.multi_per_task
        assert multi[target]["rss_after_kb"] > 0
        _assert_complete(multi[target]["step"], every_frame=target == "naive", label=target)


def test_polling_endpoints(results):
    polling = results["runs"][0]["polling"]
    load, c = polling["load"], bench.QUICK.poll_concurrency
    for conc in (1, c):
        assert set(load[f"ours_json/c{conc}"]["statuses"]) == {"200"}
        assert set(load[f"ours_json_304/c{conc}"]["statuses"]) == {"304"}
        assert set(load[f"ours_htmx/c{conc}"]["statuses"]) == {"200"}
        assert set(load[f"celery_progress/c{conc}"]["statuses"]) == {"200"}
    assert polling["staleness"]["ours_htmx_1s"]["n"] > 0


def test_client_calibration(results):
    calibration = results["calibration"]
    for client in ("raw", "websockets"):
        assert calibration[client]["missing_finals"] == 0, calibration[client]


def test_profile_and_report(results, tmp_path):
    from bench import report

    fan_out, polling = results["profiles"]
    assert fan_out["target"] == "ours" and fan_out["missing_finals"] == 0
    assert polling["target"] == "poll304" and polling["fps"] > 0
    out = tmp_path / "benchmarks.md"
    out.write_text("# Mine\n\nkept above\n\n" + report.BEGIN + "\nold\n" + report.END + "\n\nkept below\n")
    report.write(results, out)
    text = out.read_text()
    assert "kept above" in text and "kept below" in text and "\nold\n" not in text
    assert "### Targets" in text
    for image in ("fanout.png", "worker.png", "e2e.png", "profile.png"):
        assert (tmp_path / "bench" / image).stat().st_size > 0


def test_hub_reader():
    """``--only hub_reader`` (not in the default set): both ways read every message (else the wait times out), each
    the way it says (the hub's own off the parser, the other through get_message), and the report has its section."""
    from bench import hub_reader

    only = bench.run(bench.QUICK, scenarios=("hub_reader",), skip_optional=False)
    (run,) = only["runs"]
    for way in hub_reader.WAYS:
        rounds = run["hub_reader"][way]["rounds"]
        assert len(rounds) == bench.QUICK.hub_reader_rounds, (way, rounds)
        assert all(cpu > 0 and wall > 0 for cpu, wall in rounds), (way, rounds)
    assert run["hub_reader"]["hub"]["off_the_parser"] is True
    assert run["hub_reader"]["get_message"]["off_the_parser"] is False
    assert any(line.startswith("| the hub's read off the parser") for line in hub_reader.section(only))
