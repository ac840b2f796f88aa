"""Small helpers shared by the tests that talk to real services."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from core import mqtt

T = TypeVar("T")


def wait_for(probe: Callable[[], T], *, timeout_s: float, interval_s: float = 0.2, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {value!r})")
        time.sleep(interval_s)


class Publisher:
    """A plain MQTT 5 client that publishes at QoS 1 and waits for every PUBACK."""

    def __init__(self, mqtt_url: str, client_id: str) -> None:
        self.connected = threading.Event()
        self.client = mqtt.new_client(client_id)
        self.client.on_connect = lambda *args: self.connected.set()
        mqtt.start(self.client, mqtt.parse_mqtt_url(mqtt_url), clean_start=True)
        assert self.connected.wait(10), "publisher could not connect"

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"no PUBACK for {topic}"

    def close(self) -> None:
        mqtt.stop(self.client)


class ApiServer:
    """The real API served by uvicorn on a free local port, in a thread."""

    def __init__(self, settings, database_url: str) -> None:
        import socket

        import uvicorn

        from api.app import create_app

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(settings, database_url), host="127.0.0.1", port=self.port,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, timeout_s=15, what="API start")
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
