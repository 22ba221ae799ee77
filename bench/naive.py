"""The anchor consumer: what a user following the Channels tutorial would write.

One group per task, joined in ``connect``; the handler forwards the event's data
with ``send_json``. Workers publish with ``async_to_sync(channel_layer.group_send)``.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

#: ``type`` of the events the bench publisher sends to the tutorial consumer's groups.
EVENT_TYPE = "progress.update"


def naive_group(name: str) -> str:
    return f"bench-naive-{name}"


class NaiveProgressConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.group_name = naive_group(self.scope["url_route"]["kwargs"]["group"])
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def progress_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event["data"])
