"""Results of a task without services: link and file-name rules, signing, limits, the stored files' names and sweep."""

from __future__ import annotations

import datetime
import io
import json
import time
from pathlib import Path

import pytest
from django.core import signing
from django.utils import translation

from realtime_async._core.access import make_watch_token
from realtime_async._core.results import (
    FILES_DIRECTORY,
    MAX_FILENAME_LENGTH,
    MAX_LABEL_LENGTH,
    clean_filename,
    content_type_for,
    expiry_of,
    find_file,
    make_link,
    safe_url,
    sign_download,
    storage_name,
    unsign_download,
)
from realtime_async._web.results import display_results
from realtime_async._writing import files
from realtime_async.async_manager import AsyncManager
from realtime_async.conf import get_settings
from realtime_async.exceptions import ImproperlyConfiguredError

CASES = json.loads((Path(__file__).parent.parent / "display_cases.json").read_text(encoding="utf-8"))


@pytest.fixture
def storage_dir(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "results": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "FILE_STORAGE_ALIAS": "results"}
    return tmp_path


@pytest.mark.parametrize("case", CASES["results"], ids=lambda case: json.dumps(case["record"])[:60])
def test_results_display_follows_the_shared_table(case):
    with translation.override("en"):
        assert display_results(case["record"], token=case.get("token")) == case["expect"]


@pytest.mark.parametrize(
    "url",
    ["/reports/7/", "/a?b=1#c", "http://example.com", "https://example.com/x?y#z", "HTTPS://EXAMPLE.COM/"],
)
def test_safe_url_keeps_http_urls_and_paths_on_this_site(url):
    assert safe_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,<b>",
        "vbscript:x",
        "//evil.example/",
        "/\\evil.example/",
        "https:evil",
        "https:///x",
        "reports/7",
        " /a",
        "/a b",
        "/a\n",
        "/\x00",
        "/é",
        "",
        None,
        7,
        "/" + "a" * 2048,
    ],
)
def test_safe_url_refuses_everything_else(url):
    assert safe_url(url) is None


def test_make_link_encodes_what_it_can_and_refuses_unsafe_urls():
    assert make_link("/rapport/é/", "Öffnen") == {"url": "/rapport/%C3%A9/", "label": "Öffnen"}
    assert make_link("https://example.com/", None) == {"url": "https://example.com/", "label": None}
    assert make_link("/r/", "  \x07 ") == {"url": "/r/", "label": None}
    long = make_link("/r/", "x" * 500)["label"]
    assert len(long) == MAX_LABEL_LENGTH and long.endswith("…")
    for bad in ("javascript:alert(1)", "//evil/", 42, "reports/7"):
        with pytest.raises(ValueError, match="http"):
            make_link(bad, "x")


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("report.csv", "report.csv"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("/tmp/x/Bericht März.csv", "Bericht März.csv"),
        ("a\r\nb\x00.txt", "ab.txt"),
        ('say "hi".txt', 'say "hi".txt'),
    ],
)
def test_file_names_keep_only_their_last_part(given, name):
    assert clean_filename(given) == name


@pytest.mark.parametrize("given", ["", "   ", ".", "..", "dir/", "a/..", "\x00"])
def test_a_name_with_nothing_left_is_refused(given):
    with pytest.raises(ValueError, match="filename="):
        clean_filename(given)


def test_long_file_names_are_cut_keeping_their_extension():
    name = clean_filename("x" * 500 + ".csv")
    assert len(name) == MAX_FILENAME_LENGTH and name.endswith(".csv")


def test_content_types_are_guessed_or_checked():
    assert content_type_for("r.csv") == "text/csv"
    assert content_type_for("blob") == "application/octet-stream"
    assert content_type_for("r.csv", "text/csv; charset=utf-8") == "text/csv; charset=utf-8"
    for bad in ("text/html\r\nX-Evil: 1", "csv", "text/csv; x", 3, "a/" + "b" * 300):
        with pytest.raises(ValueError, match="content_type"):
            content_type_for("r.csv", bad)


def test_storage_names_come_from_the_entry_and_admit_no_path():
    entry = {"id": "0123456789abcdef" * 2, "expires_at": 1764400000}
    assert storage_name(entry) == f"{FILES_DIRECTORY}/1764400000-{entry['id']}"
    assert expiry_of(f"1764400000-{entry['id']}") == 1764400000
    for bad in (
        {"id": "../../etc/passwd", "expires_at": 1},
        {"id": "A" * 32, "expires_at": 1},
        {**entry, "expires_at": "1/.."},
    ):
        with pytest.raises(ValueError):
            storage_name(bad)
    for name in ("x", "1-../x", f"1764400000-{entry['id']}.tmp", f"-1-{entry['id']}"):
        assert expiry_of(name) is None


def test_find_file_by_id():
    record = {"files": [{"id": "a"}, "junk", {"id": "b"}]}
    assert find_file(record, "b") == {"id": "b"}
    assert find_file(record, "c") is None
    assert find_file({"files": None}, "a") is None


def test_download_tokens_name_one_file_and_refuse_tampering():
    token = sign_download("rpt-1", "f" * 32)
    assert unsign_download(token) == ("rpt-1", "f" * 32)
    assert unsign_download(token, max_age=60) == ("rpt-1", "f" * 32)
    tampered = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        token + "/..",
        "../" + token,
        token.replace(":", "%2F"),
        "",
        "x" * 2000,
    ]
    for bad in tampered:
        with pytest.raises(signing.BadSignature):
            unsign_download(bad)
    with pytest.raises(signing.BadSignature):  # a watch token is signed with another salt
        unsign_download(make_watch_token("rpt-1"))
    with pytest.raises(signing.BadSignature):  # the right salt, the wrong shape
        unsign_download(signing.TimestampSigner(salt="realtime_async.download").sign_object({"t": "x"}))


def test_download_tokens_expire(monkeypatch):
    token = sign_download("rpt-1", "f" * 32)
    later = time.time() + 120
    monkeypatch.setattr(signing.time, "time", lambda: later)
    with pytest.raises(signing.SignatureExpired):
        unsign_download(token, max_age=60)
    assert unsign_download(token, max_age=datetime.timedelta(minutes=5).total_seconds())


def test_file_settings_have_defaults_and_are_checked(settings):
    defaults = get_settings()
    assert (defaults.file_storage_alias, defaults.file_max_bytes, defaults.file_max_per_task) == (
        "default",
        52428800,
        10,
    )
    assert defaults.file_retention == 86400
    for key, value in (
        ("FILE_MAX_BYTES", 0),
        ("FILE_MAX_PER_TASK", -1),
        ("FILE_RETENTION", "1"),
        ("FILE_STORAGE_ALIAS", ""),
    ):
        settings.REALTIME_ASYNC = {key: value}
        with pytest.raises(ImproperlyConfiguredError, match=key):
            get_settings()


def test_store_file_copies_a_path_and_names_it_by_id_and_expiry(storage_dir, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,2\n", encoding="utf-8")
    before = time.time()
    entry = files.store_file("rpt-1", source)
    assert entry["name"] == "in.csv" and entry["size"] == 8 and entry["content_type"] == "text/csv"
    assert before + 86400 <= entry["expires_at"] <= time.time() + 86401
    assert entry["url"].startswith("/ra/realtime-async/download/")  # include("realtime_async.urls") first
    signed = entry["url"].rsplit("/", 2)[-2]
    assert unsign_download(signed) == ("rpt-1", entry["id"])
    assert (storage_dir / storage_name(entry)).read_bytes() == b"a,b\n1,2\n"


def test_store_file_takes_binary_and_text_streams(storage_dir):
    binary = files.store_file("rpt-1", io.BytesIO(b"\x00\x01"), filename="x.bin", content_type="application/x-thing")
    assert (binary["size"], binary["content_type"]) == (2, "application/x-thing")
    text = files.store_file("rpt-1", io.StringIO("é"), filename="x.txt")
    assert (storage_dir / storage_name(text)).read_bytes() == "é".encode()
    with pytest.raises(ValueError, match="filename="):
        files.store_file("rpt-1", io.BytesIO(b"x"))  # no name to give it
    with pytest.raises(TypeError, match="path or a file object"):
        files.store_file("rpt-1", b"bytes")


def test_files_over_the_size_limit_are_refused_and_not_kept(storage_dir, settings, tmp_path):
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "FILE_MAX_BYTES": 10}
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * 11)
    with pytest.raises(ValueError, match="FILE_MAX_BYTES allows 10"):
        files.store_file("rpt-1", big)
    with pytest.raises(ValueError, match="FILE_MAX_BYTES allows 10"):
        files.store_file("rpt-1", io.BytesIO(b"x" * 11), filename="big.csv")
    assert not (storage_dir / FILES_DIRECTORY).exists() or not list((storage_dir / FILES_DIRECTORY).iterdir())
    assert files.store_file("rpt-1", io.BytesIO(b"x" * 10), filename="ok.csv")["size"] == 10


def test_the_files_per_task_limit_is_checked_by_the_change(settings):
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "FILE_MAX_PER_TASK": 2}
    record = {"files": [{"id": "a"}, {"id": "b"}]}
    added = []
    with pytest.raises(ValueError, match="FILE_MAX_PER_TASK allows 2"):
        files.file_change({"id": "c"}, added)(record)
    assert added == [] and len(record["files"]) == 2
    record = {"files": None}
    files.file_change({"id": "c"}, added)(record)
    assert record["files"] == [{"id": "c"}] and added == [{"id": "c"}]


def test_attach_file_outside_a_task_does_nothing(storage_dir):
    assert AsyncManager().attach_file(None, io.BytesIO(b"x"), filename="x.csv") is None
    assert not (storage_dir / FILES_DIRECTORY).exists()


def test_attach_file_needs_the_download_url(storage_dir, settings):
    settings.ROOT_URLCONF = "tests.testapp.urls"
    with pytest.raises(ImproperlyConfiguredError, match="get_download_url"):
        files.store_file("rpt-1", io.BytesIO(b"x"), filename="x.csv")


def test_sweep_deletes_expired_files_only(storage_dir):
    old = files.store_file("rpt-1", io.BytesIO(b"old"), filename="old.csv")
    new = files.store_file("rpt-1", io.BytesIO(b"new"), filename="new.csv")
    stranger = storage_dir / FILES_DIRECTORY / "README"
    stranger.write_text("not ours")
    at = old["expires_at"] + 1
    assert files.sweep(dry_run=True, now=at) == sorted(storage_name(e) for e in (old, new))
    assert (storage_dir / storage_name(old)).exists()
    assert files.sweep(now=old["expires_at"] - 10) == []
    assert files.sweep(now=at) == sorted(storage_name(e) for e in (old, new))
    assert not (storage_dir / storage_name(old)).exists() and stranger.exists()


def test_sweep_of_an_empty_storage(storage_dir):
    assert files.sweep() == []


def test_delete_files_removes_what_a_record_lists(storage_dir):
    entry = files.store_file("rpt-1", io.BytesIO(b"x"), filename="x.csv")
    assert files.delete_files({"files": [entry, {"id": "bad"}, "junk"]}) == 1
    assert not (storage_dir / storage_name(entry)).exists()
    assert files.delete_files(None) == 0
