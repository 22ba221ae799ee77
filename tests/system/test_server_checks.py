"""The running server's own options, checked by its first WebSocket connection and logged (W006 to W009)."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect

from tests.services import start_server, start_uvicorn

LOGGED = "realtime_async: system check of the running server: "
#: uvicorn with the options W006, W008 and W009 are about (and the rest as the README has them).
HARMFUL = ("--ws", "websockets-sansio", "--lifespan", "off", "--ws-max-size", "1024", "--ws-ping-interval", "0")


async def _ping_twice(port: int) -> None:
    for _ in range(2):  # the first connection checks; the second finds it done
        async with connect(
            f"ws://127.0.0.1:{port}/ws/realtime-async/", origin=f"http://127.0.0.1:{port}", proxy=None
        ) as conn:
            await conn.send(json.dumps({"v": 1, "type": "ping"}))
            assert json.loads(await asyncio.wait_for(conn.recv(), 10)) == {"v": 1, "type": "pong"}


def _checked(proc, port: int) -> list[str]:
    """Connect twice; the ids of the system check messages the server logged."""
    try:
        asyncio.run(_ping_twice(port))
    finally:
        proc.stop()
    lines = [line for line in proc.output().splitlines() if line.startswith(LOGGED)]
    return [line.split("(realtime_async.")[1][:4] for line in lines]


def test_uvicorn_with_harmful_options_is_told_once(django_db_setup):
    proc, port = start_uvicorn(options=HARMFUL, name="uvicorn-checks")
    assert _checked(proc, port) == ["W006", "W008", "W009"]
    log = proc.output()
    about = "uvicorn (websockets-sansio): (realtime_async.W006)"
    assert f"{LOGGED}{about} The server refuses WebSocket messages over 1,024 bytes" in log
    assert "HINT: Start uvicorn with --ws-max-size 65536" in log
    assert "HINT: Start uvicorn with --ws-ping-interval 20 --ws-ping-timeout 20" in log


def test_the_documented_commands_pass(django_db_setup, server):
    """daphne's defaults and uvicorn with the README's options (``server``): nothing to say."""
    proc, port = start_server(server, name=f"{server}-checks")
    assert _checked(proc, port) == []
    assert "Traceback" not in proc.output()
