"""ASGI middleware: security headers, a request body cap, and rate limiting per token.

They are plain ASGI (not ``BaseHTTPMiddleware``) so that streamed responses stay streamed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Buckets of clients not seen for this long are forgotten; they would be full again anyway.
BUCKET_IDLE_S = 600.0
BUCKETS_PRUNE_AT = 10_000
# Probes must keep working when a client floods the API.
UNLIMITED_PATHS = ("/api/v1/health",)

_API_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
_ALL_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


async def _send_error(send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The interactive docs load their own scripts and styles; only API answers get the strict policy.
        extra = _ALL_HEADERS + (_API_HEADERS if scope["path"].startswith("/api/") else [])
        if scope.get("scheme") == "https":
            extra = [*extra, (b"strict-transport-security", b"max-age=31536000; includeSubDomains")]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    def __init__(self, app: App, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body larger than {self.max_bytes} bytes"
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _send_error(send, 400, "invalid Content-Length")
                return
            if length > self.max_bytes:
                await _send_error(send, 413, too_large)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _send_error(send, 413, too_large)


class _BodyTooLarge(Exception):
    pass


class RateLimit:
    """A token bucket per bearer token (per client address for requests without one)."""

    def __init__(self, app: App, *, per_min: float, burst: int) -> None:
        self.app = app
        self.rate_per_s = per_min / 60.0
        self.burst = float(burst)
        self.buckets: dict[str, tuple[float, float]] = {}

    def _key(self, scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                # Only a digest is kept in memory, never the token itself.
                return "t:" + hashlib.sha256(value).hexdigest()
        client = scope.get("client")
        return "a:" + (client[0] if client else "?")

    def take(self, key: str, now: float) -> float:
        """Take one request from the bucket; return 0 if allowed, else seconds until one is."""
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        if tokens >= 1.0:
            self.buckets[key] = (tokens - 1.0, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s if self.rate_per_s > 0 else 60.0

    def _prune(self, now: float) -> None:
        if len(self.buckets) >= BUCKETS_PRUNE_AT:
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < BUCKET_IDLE_S}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        self._prune(now)
        wait_s = self.take(self._key(scope), now)
        if wait_s > 0:
            await _send_error(send, 429, "too many requests; slow down",
                              [(b"retry-after", str(max(1, math.ceil(wait_s))).encode())])
            return
        await self.app(scope, receive, send)
