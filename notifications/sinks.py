"""Local receivers for ``ironsight run``, so that a user sees what would have been sent.

- ``MailSink``: an SMTP server (aiosmtpd) on 127.0.0.1 that keeps each message as ``<key>.eml``.
- ``HttpSink``: an HTTP receiver (stdlib, in a thread) for the SMS gateway (``/sms``) and the
  webhooks (``/webhook``); it checks the signature and keeps each request as ``<key>.json``.

Both are receivers as the guarantees expect one to be: a repeat (same Message-ID or
Idempotency-Key, after a crash between sending and recording) is acknowledged and not kept twice.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from notifications.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

log = logging.getLogger(__name__)
# aiosmtpd logs every SMTP command at INFO: the run's console would show nothing else.
logging.getLogger("mail.log").setLevel(logging.WARNING)

# What the sinks accept in one request or message (the demo's notifications are a few KiB).
MAX_BODY_BYTES = 1_048_576
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _file_name(key: str) -> str:
    return _SAFE_NAME.sub("_", key).strip("._")[:120] or "unnamed"


def _keep(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it exists (a repeat); whether it was new."""
    try:
        with open(path, "xb") as file:
            file.write(data)
        return True
    except FileExistsError:
        return False


class _MailHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        content: bytes = envelope.original_content or envelope.content
        message_id = str(message_from_bytes(content, policy=default_policy).get("Message-ID", "")).strip("<> ")
        key = message_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        if not _keep(self.directory / f"{_file_name(key)}.eml", content):
            log.info("mail sink: %s again (a repeat), not kept twice", key)
        return "250 Message accepted"


class MailSink:
    """An SMTP server on ``host`` keeping every message under ``directory``."""

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self._controller = Controller(_MailHandler(directory), hostname=host, port=self.port,
                                      data_size_limit=MAX_BODY_BYTES, enable_SMTPUTF8=True)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class _Receiver(BaseHTTPRequestHandler):
    server: _HttpSinkServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        kind = self.path.strip("/").split("/")[0].split("?")[0]
        if kind not in ("sms", "webhook"):
            self._answer(404, {"detail": "POST to /sms or /webhook"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self._answer(413 if length else 411, {"detail": "a JSON body up to 1 MiB"})
            return
        body = self.rfile.read(length)
        secret = self.server.secret
        if secret and not verify(secret, self.headers.get(TIMESTAMP_HEADER), body,
                                 self.headers.get(SIGNATURE_HEADER)):
            self._answer(401, {"detail": "bad or missing signature"})
            return
        try:
            payload = json.loads(body)
        except ValueError:
            self._answer(400, {"detail": "not JSON"})
            return
        key = self.headers.get(IDEMPOTENCY_HEADER) or datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        record = {"received_at": datetime.now(UTC).isoformat(), "path": self.path,
                  "idempotency_key": self.headers.get(IDEMPOTENCY_HEADER), "signature_verified": bool(secret),
                  "payload": payload}
        directory = self.server.directory / kind
        directory.mkdir(parents=True, exist_ok=True)
        new = _keep(directory / f"{_file_name(key)}.json",
                    json.dumps(record, ensure_ascii=False, indent=2).encode())
        self._answer(200, {"stored": new, "repeat": not new})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http sink: " + format, *args)


class _HttpSinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], directory: Path, secret: str | None) -> None:
        super().__init__(address, _Receiver)
        self.directory = directory
        self.secret = secret


class HttpSink:
    """An HTTP receiver on ``host`` for ``/sms`` and ``/webhook``, keeping requests under
    ``directory``/sms and ``directory``/webhook; with a secret, unsigned requests get 401."""

    def __init__(self, directory: Path, *, secret: str | None, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _HttpSinkServer((host, port), directory, secret)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-sink", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HttpSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
