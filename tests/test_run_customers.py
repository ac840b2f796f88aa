"""``ironsight run``'s customers: records with contacts, whose calls the simulated call centre takes
(the caller found by the number the line gives, the call completed with an outcome) and whose
requests come in through the portal; the status line counts the calls."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid

import httpx

from ironsight.processes import free_tcp_port
from tests.helpers import wait_for

LOGIN = re.compile(r"^login (\S+) / (\S+)")
CALLS = re.compile(r"calls/h\s+(\d+)(?: \(last: ([a-z ]+)\))?")


def test_customers_call_the_call_centre_and_raise_requests_in_the_portal(new_database, mqtt_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRONSIGHT_")}
    env.update(IRONSIGHT_DATA_DIR=str(tmp_path / "data"), IRONSIGHT_TOPIC_ROOT=f"calls-{uuid.uuid4().hex[:8]}",
               IRONSIGHT_DATABASE_URL=new_database(f"calls_{uuid.uuid4().hex[:6]}"), IRONSIGHT_MQTT_URL=mqtt_url)
    port = free_tcp_port()
    # A call every 3 s and a request every 6 s on average; calls last 2-8 s at this speed.
    process = subprocess.Popen(
        [sys.executable, "-m", "ironsight", "run", "--controllers", "12", "--api-port", str(port),
         "--status-every", "1", "--diagnostics-workers", "1", "--speed", "30",
         "--calls-per-hour", "1200", "--portal-requests-per-hour", "600"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen: list[str] = []

    def read() -> list[str]:
        while not lines.empty():
            seen.append(lines.get())
        return seen

    try:
        wait_for(lambda: any(LOGIN.match(line) for line in read()), timeout_s=60, what="the admin login printed")
        username, password = next(m.groups() for line in seen if (m := LOGIN.match(line)))
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10)

        def signed_in() -> bool:
            try:
                answer = api.post("/auth/token", data={"username": username, "password": password})
            except httpx.TransportError:
                return False  # the API process may still be starting on a busy machine
            api.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
            return True

        wait_for(signed_in, timeout_s=30, what="the API")
        customers = api.get("/customers").json()["data"]
        assert {c["tier"] for c in customers} == {"gold", "silver", "standard"}
        for customer in customers:
            contacts = api.get(f"/customers/{customer['id']}/contacts").json()
            assert len(contacts) >= 2 and all(c["phones"] for c in contacts)

        def ended_call() -> dict | None:
            calls = api.get("/calls", params={"limit": 500}).json()["data"]
            return next((c for c in calls if c["ended_at"] and c["outcome"]), None)

        call = wait_for(ended_call, timeout_s=90, what="a call answered and completed")
        assert call["source"] == "cti" and call["customer_id"] and call["contact_id"] and call["equipment_id"]
        assert call["phone"] != call["phone_e164"]  # as the line gave it, found all the same
        screen = api.get("/calls/lookup", params={"phone": call["phone"]}).json()
        assert screen["contact"]["id"] == call["contact_id"] and screen["machines_count"] > 0

        def portal_request() -> dict | None:
            tickets = api.get("/tickets", params={"limit": 1000}).json()["data"]
            return next((t for t in tickets if t["channel"] == "portal"), None)

        request = wait_for(portal_request, timeout_s=60, what="a request raised through the portal")
        assert request["kind"] in ("fault", "consultation", "complaint") and request["contact_id"]
        machine = api.get(f"/equipment/{request['equipment_id']}").json()
        assert request["created_by"] == f"{machine['customer']}.portal"  # the customer's own account
        wait_for(lambda: any((m := CALLS.search(line)) and int(m.group(1)) > 0 and m.group(2) for line in read()),
                 timeout_s=30, what="the status line counting the calls")
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    assert code == 0
