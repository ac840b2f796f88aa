"""Delivery of one notification over its channel: a signed webhook, e-mail over SMTP, an SMS gateway.

Each send answers an ``Outcome``: delivered, refused for good (``permanent``), or to be retried.
HTTP (webhooks and the SMS gateway): 2xx is delivered; 408, 429 and 5xx, timeouts and refused
connections are retried; any other answer (4xx, a redirect) is refused for good. A receiver gets at
most ``timeout_s`` in all, however it dribbles its answer, and only the first bytes of its answer
are read. SMTP: a 2xx reply to the message is delivered, a 5xx refusal is for good, a 4xx reply,
a lost connection or a failed login is retried.
"""

from __future__ import annotations

import asyncio
import email.policy
import json
import smtplib
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from notifications.signing import IDEMPOTENCY_HEADER, signed_headers

# Of an HTTP answer only this much is read and recorded: a receiver cannot make the worker read a
# gigabyte.
RESPONSE_EXCERPT_BYTES = 1024
# Headers are not folded below this length (RFC 5322 allows 998): a folded Message-ID reads back with a
# leading space in some parsers, and a receiver that drops repeats compares it as text.
_HEADER_LINE_MAX = 998
# HTTP answers that mean "try again later" although they are 4xx.
RETRIED_4XX = (408, 429)
_TRUE = ("1", "true", "yes", "on")


class ConfigurationError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    permanent: bool = False           # a failure that no retry will cure
    status_code: int | None = None    # HTTP status or SMTP reply code
    reply: str | None = None          # SMTP reply text, or the start of the HTTP answer
    error: str | None = None
    duration_s: float = 0.0

    def describe(self) -> str:
        return self.error or " ".join(str(part) for part in (self.status_code, self.reply) if part) or "failed"


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool
    starttls: bool


def parse_smtp_url(url: str) -> SmtpServer:
    """``smtp://user:pass@host:port`` (``?starttls=true`` to upgrade), ``smtps://`` for implicit TLS."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigurationError("IRONSIGHT_SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
    query = parse_qs(parts.query)
    implicit = parts.scheme == "smtps"
    return SmtpServer(parts.hostname, parts.port or (465 if implicit else 25),
                      unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password else None, implicit,
                      not implicit and query.get("starttls", [""])[0].lower() in _TRUE)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How the notify worker reaches each channel (from Settings: IRONSIGHT_SMTP_URL …)."""

    smtp: SmtpServer | None = None
    mail_from: str = "IronSight <notifications@ironsight.invalid>"
    sms_gateway_url: str | None = None
    webhook_secret: str | None = None
    timeout_s: float = 10.0
    lease_s: float = 120.0
    retry_first_s: float = 1.0
    retry_max_s: float = 300.0
    give_up_after_s: float = 86400.0

    @classmethod
    def from_settings(cls, settings: Any) -> DeliveryConfig:
        smtp_url = settings.smtp_url.get_secret_value() if settings.smtp_url else None
        secret = settings.notify_webhook_secret.get_secret_value() if settings.notify_webhook_secret else None
        config = cls(smtp=parse_smtp_url(smtp_url) if smtp_url else None, mail_from=settings.mail_from,
                     sms_gateway_url=settings.sms_gateway_url or None, webhook_secret=secret or None,
                     timeout_s=settings.notify_timeout_s, lease_s=settings.notify_lease_s,
                     retry_max_s=settings.notify_retry_max_s,
                     give_up_after_s=settings.notify_give_up_after_h * 3600.0)
        if config.lease_s < 3 * config.timeout_s:
            # A lease shorter than a send would let a second worker send what the first still is sending.
            raise ConfigurationError("IRONSIGHT_NOTIFY_LEASE_S must be at least three times IRONSIGHT_NOTIFY_TIMEOUT_S")
        return config


def webhook_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": str(row["key"]), "event": row["event"], "ticket": row["ticket_id"], "recipient": row["recipient"],
            "recipient_name": row["recipient_name"], "language": row["language"], "subject": row["subject"],
            "body": row["body"], "facts": row["facts"], "created_at": row["created_at"].isoformat()}


def sms_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"to": row["address"], "text": f"{row['subject']}\n{row['body']}", "reference": str(row["key"])}


def message_id(row: Mapping[str, Any], mail_from: str) -> str:
    """Derived from the row alone: a repeat after a crash carries the same Message-ID."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "ironsight.invalid"
    return f"<{uuid.UUID(str(row['key'])).hex}@{domain}>"


def email_message(row: Mapping[str, Any], mail_from: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    name = row["recipient_name"] or ""
    local, _, domain = str(row["address"]).rpartition("@")
    message["To"] = Address(display_name=name, username=local, domain=domain)
    message["Subject"] = row["subject"]
    message["Date"] = format_datetime(row["created_at"])
    message["Message-ID"] = message_id(row, mail_from)
    message["X-IronSight-Event"] = row["event"]
    # quoted-printable: seven bits on the wire whatever the server supports, and a Chinese body arrives intact.
    message.set_content(row["body"], charset="utf-8", cte="quoted-printable")
    return message


class Channels:
    """Sends notifications; owns an HTTP client (on an event loop of its own, for a deadline that
    holds against a receiver answering byte by byte). One per worker thread."""

    def __init__(self, config: DeliveryConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._http = httpx.AsyncClient(timeout=config.timeout_s, follow_redirects=False)

    def close(self) -> None:
        self._loop.run_until_complete(self._http.aclose())
        self._loop.close()

    def unconfigured(self, channel: str) -> str | None:
        """Why ``channel`` cannot be used at all (None: it can)."""
        if channel == "email" and self.config.smtp is None:
            return "no SMTP configured (IRONSIGHT_SMTP_URL)"
        if channel == "sms" and not self.config.sms_gateway_url:
            return "no SMS gateway configured (IRONSIGHT_SMS_GATEWAY_URL)"
        return None

    def send(self, row: Mapping[str, Any]) -> Outcome:
        began = time.monotonic()
        if row["channel"] == "email":
            outcome = self._send_email(row)
        elif row["channel"] == "sms":
            outcome = self._post(str(self.config.sms_gateway_url), sms_payload(row), row)
        elif row["channel"] == "webhook":
            outcome = self._post(str(row["address"]), webhook_payload(row), row)
        else:
            outcome = Outcome(False, permanent=True, error=f"unknown channel {row['channel']!r}")
        return Outcome(outcome.ok, outcome.permanent, outcome.status_code, outcome.reply, outcome.error,
                       time.monotonic() - began)

    # --- HTTP: webhooks and the SMS gateway ---

    def _post(self, url: str, payload: dict[str, Any], row: Mapping[str, Any]) -> Outcome:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: str(row["key"]),
                   **signed_headers(self.config.webhook_secret, body)}
        try:
            status, excerpt = self._loop.run_until_complete(self._exchange(url, body, headers))
        except TimeoutError:
            return Outcome(False, error=f"no complete answer within {self.config.timeout_s:g} s")
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return Outcome(False, permanent=True, error=f"bad URL: {exc}")
        except httpx.HTTPError as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])
        reply = excerpt.decode("utf-8", "replace")
        if 200 <= status < 300:
            return Outcome(True, status_code=status, reply=reply)
        retried = status in RETRIED_4XX or status >= 500
        return Outcome(False, permanent=not retried, status_code=status, reply=reply, error=f"HTTP {status}")

    async def _exchange(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        async with asyncio.timeout(self.config.timeout_s), \
                self._http.stream("POST", url, content=body, headers=headers) as response:
            excerpt = b""
            async for chunk in response.aiter_raw():
                excerpt += chunk[:RESPONSE_EXCERPT_BYTES - len(excerpt)]
                if len(excerpt) >= RESPONSE_EXCERPT_BYTES:
                    break
            return response.status_code, excerpt

    # --- e-mail ---

    def _send_email(self, row: Mapping[str, Any]) -> Outcome:
        server = self.config.smtp
        if server is None:
            return Outcome(False, permanent=True, error="no SMTP configured")
        message = email_message(row, self.config.mail_from)
        sender = parseaddr(self.config.mail_from)[1]
        recipient = str(row["address"])
        try:
            smtp = (smtplib.SMTP_SSL(server.host, server.port, timeout=self.config.timeout_s,
                                     context=ssl.create_default_context()) if server.implicit_tls
                    else smtplib.SMTP(server.host, server.port, timeout=self.config.timeout_s))
            with smtp:
                if server.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if server.username:
                    smtp.login(server.username, server.password or "")
                smtp.ehlo_or_helo_if_needed()
                international = not (sender + recipient).isascii()
                if international and not smtp.has_extn("smtputf8"):
                    return Outcome(False, permanent=True, error="a non-ASCII address, and the server has no SMTPUTF8")
                options = ["SMTPUTF8"] if international else []
                code, reply = smtp.mail(sender, options)
                if code == 250:
                    code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    return _smtp_refusal(code, reply)
                policy = (email.policy.SMTPUTF8 if international else email.policy.SMTP).clone(
                    max_line_length=_HEADER_LINE_MAX)
                code, reply = smtp.data(message.as_bytes(policy=policy))
                if not 200 <= code < 300:
                    return _smtp_refusal(code, reply)
                return Outcome(True, status_code=code, reply=reply.decode("utf-8", "replace")[:500])
        except smtplib.SMTPAuthenticationError as exc:
            # The configuration is wrong, not the message: retried until someone fixes it.
            return Outcome(False, status_code=exc.smtp_code, error=f"SMTP login refused: {exc.smtp_error!r}"[:500])
        except smtplib.SMTPResponseException as exc:
            return _smtp_refusal(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])


def _smtp_refusal(code: int, reply: bytes | str) -> Outcome:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return Outcome(False, permanent=500 <= code < 600, status_code=code, reply=text[:500], error=f"SMTP {code}")
