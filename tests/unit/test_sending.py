"""How consumers send progress frames (``_delivery.sending``): past the session wrappers, framed once on daphne."""

from __future__ import annotations

import functools

from autobahn.twisted.websocket import WebSocketServerFactory
from daphne.server import Server

from realtime_async._delivery.sending import _PreparedSender, _without_session, frame_sender


class FakeProtocol:
    STATE_OPEN, STATE_CLOSED = 1, 3

    def __init__(self, factory):
        self.factory, self.state, self._perMessageCompress = factory, self.STATE_OPEN, None
        self.sent = []

    def sendPreparedMessage(self, prepared):  # noqa: N802 - autobahn's name
        self.sent.append(prepared)


def _daphne_send(server, protocol, fallback):
    send = functools.partial(Server.handle_reply.__get__(server), protocol)
    server.connections[protocol] = {}
    sender = frame_sender(send)
    sender.send = fallback  # record what would have gone the slow way
    return sender


async def test_one_frame_is_prepared_once_for_many_connections():
    server = Server.__new__(Server)
    server.connections = {}
    factory = WebSocketServerFactory()
    slow = []

    async def fallback(message):
        slow.append(message)

    protocols = [FakeProtocol(factory) for _ in range(3)]
    senders = [_daphne_send(server, protocol, fallback) for protocol in protocols]
    assert all(isinstance(sender, _PreparedSender) for sender in senders)
    frame = '{"v":1,"type":"progress","task":"t","data":{"seq":1,"message":"é"}}'
    for sender in senders:
        await sender({"type": "websocket.send", "text": frame})
    prepared = {id(protocol.sent[0]) for protocol in protocols}
    assert len(prepared) == 1 and slow == []  # framed once, written three times
    assert protocols[0].sent[0].payload == frame.encode("utf-8")
    # A closed or compressed connection, and anything but text, take daphne's own path.
    protocols[1].state = FakeProtocol.STATE_CLOSED
    protocols[2]._perMessageCompress = object()
    await senders[1]({"type": "websocket.send", "text": frame})
    await senders[2]({"type": "websocket.send", "text": frame})
    await senders[0]({"type": "websocket.close", "code": 1000})
    assert [message["type"] for message in slow] == ["websocket.send", "websocket.send", "websocket.close"]


async def test_other_servers_keep_their_send():
    async def send(message):
        pass

    assert frame_sender(send) is send
    assert frame_sender(functools.partial(send)) is not None
    assert not isinstance(frame_sender(functools.partial(send)), _PreparedSender)


def test_progress_frames_skip_the_session_wrappers_only():
    from channels.sessions import InstanceSessionWrapper

    async def raw(message):
        pass

    outer = InstanceSessionWrapper({"cookies": {}}, raw)
    inner = InstanceSessionWrapper(outer.scope, outer.send)  # a second SessionMiddleware: passes through
    assert _without_session(inner.send) is raw

    class Saving(InstanceSessionWrapper):
        save_message_types = ["http.response.start", "websocket.send"]

    saving = Saving({"cookies": {}}, raw)
    assert _without_session(saving.send) == saving.send  # a wrapper that may act on frames stays
    assert _without_session(raw) is raw
