"""State records (``_core.records``): the percent computed from what a worker reports, the log counts read back."""

from __future__ import annotations

import json

import pytest

from realtime_async._core.records import compute_percent, log_counts


@pytest.mark.parametrize(
    ("current", "total", "percent", "expected"),
    [
        (1, 4, None, 25.0),
        (None, None, 42.5, 42.5),
        (5, 4, None, 100.0),
        (None, None, -3, 0.0),
        (3, 0, None, None),
        (None, None, None, None),
        (1, 3, None, 33.33),
        (2, 4, 90, 90.0),
    ],
)
def test_compute_percent(current, total, percent, expected):
    assert compute_percent(current, total, percent) == expected


def test_copy_record_copies_every_dict_and_list_and_nothing_else():
    from realtime_async._core.records import copy_record

    record = {"seq": 3, "data": {"rows": [1, {"a": [2]}], "name": "x"}, "stages": [{"name": "A", "percent": None}]}
    before = json.loads(json.dumps(record))
    copied = copy_record(record)
    assert copied == record
    copied["data"]["rows"][1]["a"].append(3)
    copied["stages"][0]["percent"] = 50
    copied["data"]["name"] = "y"
    assert record == before


@pytest.mark.parametrize(
    ("record_json", "counts"),
    [
        ('{"seq":7,"log":{"last":12,"dropped":3},"task":"t"}', {"last": 12, "dropped": 3}),  # as stored
        (
            '{"seq":8,"log":{"last":13,"dropped":3,"lines":[{"n":13,"text":"x"}]},"task":"t"}',
            {"last": 13, "dropped": 3},
        ),
        ('{"seq":9,"task":"t","state":"running"}', None),  # no log
        ('{"seq":9,"task":"t","message":"\\"log\\":{\\"last\\":1,\\"dropped\\":0}"}', None),  # only at its place
        ("", None),
    ],
)
def test_log_counts_are_read_from_the_records_head(record_json, counts):
    assert log_counts(record_json) == counts
