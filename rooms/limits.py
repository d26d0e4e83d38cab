"""Rate limits: per WebSocket connection (messages) and per client address (room creation)."""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBucket:
    """Allows `burst` events at once, then `rate` per second."""

    def __init__(self, burst: float, rate: float) -> None:
        self.capacity = burst
        self.rate = rate
        self.tokens = burst
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# Addresses remembered at once; the least recently seen are forgotten first, so a flood of
# distinct addresses cannot grow memory without bound.
MAX_TRACKED_ADDRESSES = 10_000


class PerAddressLimit:
    """`per_minute` events per client address, allowed as a burst and refilled steadily."""

    def __init__(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, address: str) -> bool:
        if self.per_minute <= 0:
            return True  # off
        bucket = self.buckets.pop(address, None) or TokenBucket(
            self.per_minute, self.per_minute / 60
        )
        self.buckets[address] = bucket
        if len(self.buckets) > MAX_TRACKED_ADDRESSES:
            self.buckets.popitem(last=False)
        return bucket.take()
