"""Per-connection backpressure on daphne: a client that stops reading costs one frame per task, not every frame.

Progress is a state, not a log. The hub already skips to the newest update when
its fan-out lags; below it, each connection's frames were written to its
transport whether or not the client read them, so a client that stopped reading
(a frozen tab, a dead network path) made daphne buffer every update until its
ping timeout, about 50 s later.

How the buffer is seen: Twisted's producer/consumer flow control, the API its
transports offer for exactly this. A ``Valve`` is registered as the streaming
producer of the connection's transport (``transport.registerProducer(valve,
True)``): the transport calls ``pauseProducing`` when its write buffer passes
``bufferSize`` (64 KiB) and ``resumeProducing`` once it has written that buffer
out. While paused, progress frames are held: the newest one per task (a final
state is always kept, and drops the task's older frame), together with this
connection's other frames (pongs, errors) in the order they were sent; on
resume they are written in that order until the buffer fills again. The output
is the input minus superseded progress frames, so a task's ``seq`` only grows
and nothing goes out twice. Autobahn's pings and close frames are written as
before: daphne's keepalive and closing are untouched.

daphne's HTTP channel stays registered as the transport's producer after the
WebSocket upgrade; the valve takes its place and passes every call on to it, so
the transport behaves as it did. Where no valve can be registered (another ASGI
server, a transport that refuses) frames are written as they come, as before.

A connection whose transport stays paused for ``STALLED_CLOSE_AFTER`` seconds is
closed with ``CLOSE_STALLED`` (4408) so that its client reconnects and
resubscribes with its last seq; what it held is dropped. Its client is not
reading, so the close frame waits behind the buffer: the connection gets
``CLOSE_GRACE`` seconds to take it, then its TCP connection is aborted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any, Final

from realtime_async.conf import get_settings
from realtime_async.protocol import CLOSE_STALLED

__all__ = ["CLOSE_GRACE", "ENABLED", "Valve", "attach"]

logger = logging.getLogger("realtime_async")

#: Switched off only to measure the behaviour without backpressure (the benchmark, the tests).
ENABLED = True
#: Seconds a stalled connection gets to take its close frame before its TCP connection is aborted.
CLOSE_GRACE: Final = 5.0


class Valve:
    """The streaming producer of one connection's transport, holding that connection's frames while paused."""

    def __init__(
        self, protocol: Any, previous: Any, stall_after: float | None, on_stalled: Callable[[], None] | None
    ) -> None:
        self.protocol, self.previous = protocol, previous
        self.stall_after, self.on_stalled = stall_after, on_stalled
        self.loop = asyncio.get_running_loop()
        self.paused = False
        self.stalled = False
        #: Frames waiting, in order: a task's newest intermediate frame under the task's name, the others
        #: (final states, this connection's own frames) under a number. Each value is a prepared message.
        self.held: dict[str | int, Any] = {}
        self._numbers = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    # -- what the transport calls (Twisted's IPushProducer) ---------------------
    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._pause()
        if self.previous is not None:
            self.previous.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = False
        self._cancel_timer()
        if self.previous is not None:
            self.previous.resumeProducing()
        self.flush(force=False)

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The connection is gone: nothing held will ever be written."""
        self.held.clear()
        self._cancel_timer()
        if self.previous is not None:
            self.previous.stopProducing()

    # -- what the sender calls -----------------------------------------------------
    def send(self, prepared: Any, task: str | None, final: bool) -> None:
        """Write ``prepared`` now, or hold it while the transport is paused or frames wait before it.

        ``task`` names a progress frame's task (None for this connection's own
        frames, never replaced); its newest intermediate frame replaces the one
        held, and a final state, always kept, drops it.
        """
        if self.stalled:
            return  # closing: the client will resubscribe
        if not self.paused and not self.held:
            self.protocol.sendPreparedMessage(prepared)
            return
        if task is not None:
            self.held.pop(task, None)  # superseded: it will never be sent
        key: str | int = task if task is not None and not final else next(self._numbers)
        self.held[key] = prepared

    def flush(self, *, force: bool) -> None:
        """Write what is held, in order: while the transport takes it, or (``force``, before a close) all of it."""
        protocol = self.protocol
        while self.held and (force or not self.paused):
            if protocol.state != protocol.STATE_OPEN:
                self.held.clear()
                return
            key = next(iter(self.held))
            protocol.sendPreparedMessage(self.held.pop(key))  # may pause the valve again

    # -- a client that stopped reading ---------------------------------------------
    def _pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        if self.stall_after is not None and self.on_stalled is not None and not self.stalled:
            self._timer = self.loop.call_later(self.stall_after, self._stall)

    def _stall(self) -> None:
        self._timer = None
        protocol = self.protocol
        if not self.paused or self.stalled or protocol.state != protocol.STATE_OPEN:
            return
        self.stalled = True
        self.held.clear()
        logger.info(
            "realtime_async: a WebSocket client (%s) read nothing for %g s; closing it with %d",
            getattr(protocol, "peer", "?"), self.stall_after, CLOSE_STALLED,
        )  # fmt: skip
        # Autobahn aborts a connection whose close handshake does not complete in
        # closeHandshakeTimeout (1 s): give a stalled client a little longer to
        # read its close frame, then make sure the connection goes either way.
        if hasattr(protocol, "closeHandshakeTimeout"):
            protocol.closeHandshakeTimeout = CLOSE_GRACE
        self.loop.call_later(CLOSE_GRACE + 1, self._abort)
        assert self.on_stalled is not None
        self.on_stalled()

    def _abort(self) -> None:
        protocol = self.protocol
        if protocol.state != protocol.STATE_CLOSED:
            protocol.dropConnection(abort=True)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def attach(protocol: Any, on_stalled: Callable[[], None] | None) -> Valve | None:
    """Register a ``Valve`` on ``protocol``'s transport; None when backpressure cannot work there.

    Must run on the event loop that runs the transport (daphne's: Twisted's
    asyncio reactor), in a coroutine.
    """
    transport = getattr(protocol, "transport", None)
    if not ENABLED or transport is None or not callable(getattr(transport, "registerProducer", None)):
        return None
    previous = getattr(transport, "producer", None)
    if previous is not None and not getattr(transport, "streamingProducer", False):
        return None  # a pull producer: it is not ours to chain
    valve = Valve(protocol, previous, get_settings().stalled_close_after, on_stalled)
    try:
        if previous is not None:
            transport.unregisterProducer()
        transport.registerProducer(valve, True)
    except Exception:  # e.g. a TLS transport whose inner producer cannot be seen: leave it as it was
        logger.debug("realtime_async: no backpressure on %r", transport, exc_info=True)
        if previous is not None and getattr(transport, "producer", None) is None:
            transport.registerProducer(previous, True)
        return None
    # The transport may be over its limit already (a previous producer was paused).
    if getattr(transport, "producerPaused", False):
        valve._pause()
    return valve
