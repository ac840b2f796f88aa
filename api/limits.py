"""ASGI middleware: security headers, a request body cap, the client's address behind trusted proxies,
and rate limiting per account (per client address for requests that are not signed in).

They are plain ASGI (not ``BaseHTTPMiddleware``) so that streamed responses stay streamed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
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
    """413 for a body over ``max_bytes``: at once when Content-Length says so, else (a chunked body) as
    soon as that many bytes arrived. The application is then told the client went away, and whatever
    it answers to that is dropped: the client gets the 413."""

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
        refused = False
        started = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await _send_error(send, 413, too_large)
                    # Not an exception: the framework would turn it into its own 400 for an unreadable body.
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, guarded)


# ---- the client's address ------------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks, comma-separated (``10.0.0.5, 10.1.0.0/16, ::1``); ValueError for anything else."""
    items = text.split(",") if isinstance(text, str) else list(text)
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {item!r}") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of one X-Forwarded-For hop (``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:5678``, ``::1``)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class TrustedProxies:
    """Which peers may say, in X-Forwarded-For, whom they forward for."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def trusts(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        if address is None or not self.networks:
            return False
        ip = _address(address) if isinstance(address, str) else address
        return ip is not None and any(ip in network for network in self.networks)

    def client_of(self, peer: str, forwarded_for: Sequence[bytes]) -> str:
        """The client's address: the peer's own, unless the peer is a trusted proxy; then the nearest
        hop of X-Forwarded-For that is not a trusted proxy (each proxy appends the address it saw, so
        hops further left are whatever the client wrote and are never believed)."""
        if not self.trusts(peer) or not forwarded_for:
            return peer
        hops = [hop for value in forwarded_for for hop in value.decode("latin-1").split(",") if hop.strip()]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return peer  # a proxy we trust wrote garbage: believe only what we saw
            if not self.trusts(address):
                return str(address)
        return peer


class ProxyHeaders:
    """Behind trusted proxies, take the client's address (and scheme) from X-Forwarded-For (and
    X-Forwarded-Proto); from any other peer, ignore both. With no trusted proxies (the default)
    the address is the TCP peer's, which the client cannot choose."""

    def __init__(self, app: App, *, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            peer = client[0] if client else None
            if peer is not None and self.proxies.trusts(peer):
                headers = scope.get("headers", [])
                forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
                address = self.proxies.client_of(peer, forwarded)
                if address != peer:
                    scope["client"] = (address, 0)
                proto = next((value for name, value in headers if name == b"x-forwarded-proto"), None)
                if proto is not None and proto.decode("latin-1").strip() in ("http", "https"):
                    scope["scheme"] = proto.decode("latin-1").strip()
        await self.app(scope, receive, send)


class TokenOwners:
    """Which account a bearer token belongs to, learnt when the token authenticated (api.auth), so that
    the rate limit charges a signed-in caller's requests to its account. Only digests are kept; a
    token that never authenticated is unknown, and its requests count against the client address."""

    def __init__(self, *, idle_s: float = BUCKET_IDLE_S, prune_at: int = BUCKETS_PRUNE_AT) -> None:
        self.idle_s = idle_s
        self.prune_at = prune_at
        self.owners: dict[str, tuple[int, float]] = {}

    @staticmethod
    def digest(authorization: bytes | str) -> str:
        value = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
        return hashlib.sha256(value).hexdigest()

    def remember(self, authorization: bytes | str, user_id: int) -> None:
        now = time.monotonic()
        if len(self.owners) >= self.prune_at:
            self.owners = {k: v for k, v in self.owners.items() if now - v[1] < self.idle_s}
        self.owners[self.digest(authorization)] = (user_id, now)

    def owner(self, authorization: bytes) -> int | None:
        known = self.owners.get(self.digest(authorization))
        return known[0] if known is not None else None


class RateLimit:
    """A token bucket per account for requests whose token authenticated before, and per client
    address for every other request (no token, or one never seen to be valid): a made-up
    Authorization header or X-Forwarded-For header never earns a fresh bucket."""

    def __init__(self, app: App, *, per_min: float, burst: int, owners: TokenOwners | None = None) -> None:
        self.app = app
        self.rate_per_s = per_min / 60.0
        self.burst = float(burst)
        self.buckets: dict[str, tuple[float, float]] = {}
        self.owners = owners or TokenOwners()

    def _key(self, scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                owner = self.owners.owner(value)
                if owner is not None:
                    return f"u:{owner}"
                break
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
