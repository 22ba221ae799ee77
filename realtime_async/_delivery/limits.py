"""What one client may cost: messages per second, frame sizes, connections per user.

Every limit is a setting (``MAX_MESSAGES_PER_SECOND``, ``MAX_MESSAGE_BYTES``,
``MAX_CONNECTIONS_PER_USER``, ``MAX_SUBSCRIPTIONS``), documented in the README.
WebSockets and event streams (``_delivery.events``) count against the same
``MAX_CONNECTIONS_PER_USER``: one ``CONNECTIONS`` counter per process.
"""

from __future__ import annotations

import collections
import time
from typing import Any

__all__ = ["CONNECTIONS", "ConnectionCounter", "TokenBucket", "connection_key", "frame_bytes"]


class TokenBucket:
    """``rate`` messages a second sustained, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens = rate, burst, burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def connection_key(scope: dict[str, Any]) -> str:
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    # Anonymous watchers (watch tokens) are told apart by address; behind a proxy
    # that is the proxy's unless the server sets the client from proxy headers.
    client = scope.get("client") or ("",)
    return f"anon:{client[0]}"


def frame_bytes(text: str, limit: int) -> int:
    # Exact UTF-8 length only when the character count leaves any doubt.
    if len(text) > limit or len(text) * 4 <= limit:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


class ConnectionCounter:
    """Open connections per key (a user, or a client address) in this process."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()

    def acquire(self, key: str, limit: int) -> bool:
        """Count one more connection for ``key``; False (and not counted) when it already has ``limit``."""
        if self._counts[key] >= limit:
            return False
        self._counts[key] += 1
        return True

    def release(self, key: str) -> None:
        self._counts[key] -= 1
        if self._counts[key] <= 0:
            del self._counts[key]

    def __getitem__(self, key: str) -> int:
        return self._counts[key]


#: Open WebSockets and event streams per user (or per client address, for anonymous ones) in this process.
CONNECTIONS = ConnectionCounter()
