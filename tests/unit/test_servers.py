"""The ASGI server behind a connection (``_delivery.servers``) and the checks of its options (W005 to W009)."""

from __future__ import annotations

import functools
import importlib
import logging
import warnings

import pytest
from channels.sessions import InstanceSessionWrapper
from daphne.server import Server
from django.test import override_settings
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from realtime_async import checks
from realtime_async._delivery import servers
from realtime_async._delivery.servers import ServerInfo, check_running_server, check_server, detect_server

MiB = 1024 * 1024
#: uvicorn's defaults, and its options as the README recommends them.
UVICORN_DEFAULTS = ServerInfo("uvicorn", "websockets-sansio", 16 * MiB, 20.0, 20.0, True)
UVICORN_README = ServerInfo("uvicorn", "websockets-sansio", 65536, 20.0, 20.0, False)
DAPHNE_DEFAULTS = ServerInfo("daphne", "autobahn", MiB, 20, 30, False)


def daphne_send(**options):
    """A connection's ``send`` as daphne makes it: ``partial(server.handle_reply, protocol)``."""
    server = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"], **options)
    return functools.partial(server.handle_reply, object())


def uvicorn_send(protocol_class=WebSocketsSansIOProtocol, **options):
    """A connection's ``send`` as uvicorn makes it: a bound method of its protocol, whose ``config`` it reads."""
    protocol = protocol_class.__new__(protocol_class)  # __init__ would load the application
    protocol.config = Config(app="tests.project.asgi:application", **options)
    return getattr(protocol, "asgi_send", protocol.send)  # the legacy websockets protocol's is asgi_send


def protocol_class(module: str, name: str):
    """One of uvicorn's WebSocket protocols (uvicorn and websockets deprecate ``--ws websockets``: warnings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module(f"uvicorn.protocols.websockets.{module}"), name)


def ids(messages):
    return [message.id.removeprefix("realtime_async.") for message in messages]


# -- detection -------------------------------------------------------------------
def test_daphne_is_recognised_with_its_options():
    assert detect_server(daphne_send()) == DAPHNE_DEFAULTS
    seen = detect_server(daphne_send(ping_interval=5, ping_timeout=0, websocket_max_message_size=4096))
    assert seen == ServerInfo("daphne", "autobahn", 4096, 5, None, False)


@pytest.mark.parametrize(
    ("module", "name", "implementation"),
    [
        ("websockets_sansio_impl", "WebSocketsSansIOProtocol", "websockets-sansio"),
        ("websockets_impl", "WebSocketProtocol", "websockets"),
        # wsproto's (uvicorn's WSProtocol) is found the same way; wsproto is not installed here.
    ],
)
def test_uvicorn_is_recognised_with_its_implementation_and_options(module, name, implementation):
    cls = protocol_class(module, name)
    assert detect_server(uvicorn_send(cls)) == ServerInfo("uvicorn", implementation, 16 * MiB, 20.0, 20.0, True)
    options = {"ws_max_size": 1024, "ws_ping_interval": 0, "ws_ping_timeout": None, "ws_per_message_deflate": False}
    assert detect_server(uvicorn_send(cls, **options)) == ServerInfo("uvicorn", implementation, 1024, None, None, False)


def test_channels_session_wrapper_is_looked_through():
    scope = {"type": "websocket", "cookies": {}}
    wrapped = InstanceSessionWrapper(scope, uvicorn_send()).send
    assert detect_server(wrapped) == UVICORN_DEFAULTS
    assert detect_server(InstanceSessionWrapper(scope, daphne_send()).send) == DAPHNE_DEFAULTS


async def _send(message):
    """Not a server's send (a test communicator's, a wrapping middleware's)."""


@pytest.mark.parametrize("send", [_send, functools.partial(_send), print, object()])
def test_anything_else_is_not_recognised(send):
    assert detect_server(send) is None


# -- check_server: W006 to W009 ----------------------------------------------------
def test_the_recommended_options_and_daphnes_defaults_pass():
    assert check_server(UVICORN_README) == []
    assert check_server(DAPHNE_DEFAULTS) == []


def test_uvicorns_defaults_buffer_16_mib_and_deflate():
    messages = check_server(UVICORN_DEFAULTS)
    assert ids(messages) == ["W007", "W009"]
    assert all(message.obj == "uvicorn (websockets-sansio)" and message.hint for message in messages)
    assert "16 MiB" in messages[0].msg and "--ws-max-size 65536" in messages[0].hint
    assert "--ws-per-message-deflate false" in messages[1].hint


@pytest.mark.parametrize(
    ("size", "expected"),
    [(1024, ["W006"]), (4095, ["W006"]), (4096, []), (65536, []), (MiB, []), (MiB + 1, ["W007"]), (None, ["W007"])],
)
def test_max_message_size_against_max_message_bytes(size, expected):
    info = ServerInfo("uvicorn", "websockets-sansio", size, 20, 20, False)
    assert ids(check_server(info)) == expected


def test_a_larger_max_message_bytes_moves_both_bounds():
    with override_settings(REALTIME_ASYNC={"MAX_MESSAGE_BYTES": 2 * MiB}):
        for size, expected in [(MiB, ["W006"]), (2 * MiB, []), (2 * MiB + 1, ["W007"])]:
            info = ServerInfo("uvicorn", "websockets-sansio", size, 20, 20, False)
            messages = check_server(info)
            assert ids(messages) == expected, size
        assert "--ws-max-size 2097152" in messages[0].hint


@pytest.mark.parametrize(("interval", "timeout"), [(None, 20), (None, None), (20, None)])
def test_pings_off_or_never_timed_out(interval, timeout):
    uvicorn = ServerInfo("uvicorn", "websockets-sansio", 65536, interval, timeout, False)
    daphne = ServerInfo("daphne", "autobahn", MiB, 20 if interval is None else interval, timeout, False)
    assert ids(check_server(uvicorn)) == ["W008"]
    assert "--ws-ping-interval 20 --ws-ping-timeout 20" in check_server(uvicorn)[0].hint
    if timeout is None:
        assert ids(check_server(daphne)) == ["W008"]
        assert "--ping-timeout 30" in check_server(daphne)[0].hint


# -- check_running_server: once per process, logged --------------------------------
@pytest.fixture
def fresh(monkeypatch, caplog):
    """No server checked yet in this process; the log captured."""
    monkeypatch.setitem(servers._checked, "server", None)
    caplog.set_level(logging.WARNING, logger="realtime_async")
    return caplog


def test_the_first_recognised_connection_logs_each_message_once(fresh):
    check_running_server(_send)  # not a server: nothing checked, nothing remembered
    check_running_server(uvicorn_send(ws_ping_interval=None))
    check_running_server(uvicorn_send(ws_ping_interval=None))
    check_running_server(daphne_send(ping_timeout=0))  # one server per process: not checked again
    lines = [record.getMessage() for record in fresh.records]
    assert [line.split("(realtime_async.")[1][:4] for line in lines] == ["W007", "W008", "W009"]
    assert all(record.levelno == logging.WARNING for record in fresh.records)
    assert lines[1].startswith(
        "realtime_async: system check of the running server: uvicorn (websockets-sansio): (realtime_async.W008) "
        "The server sends no keepalive pings"
    )
    assert "\tHINT: Start uvicorn with --ws-ping-interval 20" in lines[1]


def test_silenced_checks_are_not_logged(fresh):
    with override_settings(SILENCED_SYSTEM_CHECKS=["realtime_async.W007", "realtime_async.W009"]):
        check_running_server(uvicorn_send())
    assert fresh.records == []


# -- W005: the static half ----------------------------------------------------------
@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ({"uvicorn"}, ["W005"]),
        ({"uvicorn", "websockets"}, []),
        ({"uvicorn", "wsproto"}, []),
        ({"websockets"}, []),
        (set(), []),
    ],
)
def test_uvicorn_without_a_websocket_library(monkeypatch, installed, expected):
    monkeypatch.setattr(checks, "find_spec", lambda name: object() if name in installed else None)
    messages = checks.check_asgi_server()
    assert ids(messages) == expected
    assert all("django-realtime-async[uvicorn]" in message.hint for message in messages)


def test_this_environment_passes_w005():
    assert checks.check_asgi_server() == []
