"""Signatures of outgoing webhooks and SMS gateway requests (HMAC-SHA256), and their check.

The sender signs ``"<timestamp>.<body>"`` (the Unix time in seconds as sent in
``X-IronSight-Timestamp``, a dot, the exact body bytes) with ``IRONSIGHT_NOTIFY_WEBHOOK_SECRET``
and sends ``X-IronSight-Signature: sha256=<hex>``. A receiver recomputes it over the bytes it
received, compares in constant time, and refuses a timestamp too far from its clock (a replay).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-IronSight-Signature"
TIMESTAMP_HEADER = "X-IronSight-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A receiver refuses a request signed further from its own clock than this (a replayed request).
MAX_SKEW_S = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The header value: ``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str | None, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The timestamp and, with a secret, the signature headers of one request."""
    timestamp = str(int(time.time() if now is None else now))
    headers = {TIMESTAMP_HEADER: timestamp}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
    return headers


def verify(secret: str, timestamp: str | None, body: bytes, received: str | None, *, now: float | None = None,
           max_skew_s: float = MAX_SKEW_S) -> bool:
    """Whether ``received`` is the signature of ``body`` at ``timestamp``, and the time is recent."""
    if not timestamp or not received or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > max_skew_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), received)
