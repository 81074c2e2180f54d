"""Fan-out of live messages to subscribers (wallboard streams, the MQTT publisher).

``publish`` never blocks the engine: each subscriber has a bounded queue, and a subscriber that
falls behind loses its oldest messages (counted), not the daemon's time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]


@dataclass(slots=True)
class Subscription:
    queue: asyncio.Queue[Message]
    dropped: int = 0


@dataclass(slots=True)
class Hub:
    maxsize: int = 1000
    subscribers: list[Subscription] = field(default_factory=list)
    version: int = 0  # bumps on every publish: pollers compare it to see a change
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def subscribe(self) -> Subscription:
        sub = Subscription(asyncio.Queue(self.maxsize))
        self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def publish(self, message: Message) -> None:
        self.version += 1
        self._changed.set()
        for sub in self.subscribers:
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait(message)

    async def changed(self, timeout: float) -> bool:
        """Wait until something is published (True) or ``timeout`` passes (False)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        self._changed.clear()
        return True
