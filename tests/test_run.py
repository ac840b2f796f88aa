"""``ironsight run`` as a user starts it: status lines, the API up, and Ctrl-C leaving nothing behind."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid

import httpx
import psutil
import pytest

from ironsight.processes import free_tcp_port
from tests.helpers import wait_for
from tests.test_metrics import free_ports, scrape, value

LOGIN = re.compile(r"^login (\S+) / (\S+)")
STATUS = re.compile(r"readings/s\s+([\d.]+)\s+diagnosis lag\s+([\d.]+) s\s+online\s+(\d+)\s+active alarms\s+(\d+)\s+"
                    r"open tickets\s+(\d+)")


@pytest.mark.parametrize("services", ["configured", "embedded"])
def test_run_shows_live_status_and_ctrl_c_stops_every_process(services, new_database, mqtt_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRONSIGHT_")}
    # Every service serves its metrics on a port of its own from this base (core.metrics.run_ports).
    metrics_base = free_ports(8 + (os.cpu_count() or 1))
    env.update(IRONSIGHT_DATA_DIR=str(tmp_path / "data"), IRONSIGHT_TOPIC_ROOT=f"run-{uuid.uuid4().hex[:8]}",
               IRONSIGHT_METRICS_PORT=str(metrics_base))
    if services == "configured":
        env.update(IRONSIGHT_DATABASE_URL=new_database(f"run_{uuid.uuid4().hex[:6]}"), IRONSIGHT_MQTT_URL=mqtt_url)
    port = free_tcp_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ironsight", "run", "--controllers", "20", "--api-port", str(port),
         "--status-every", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen: list[str] = []

    def flowing() -> bool:
        while not lines.empty():
            seen.append(lines.get())
        return any((m := STATUS.search(line)) and float(m.group(1)) > 0 and int(m.group(3)) == 20 for line in seen)

    try:
        wait_for(flowing, timeout_s=60, what="a status line with readings flowing")
        assert any(f"http://127.0.0.1:{port}/docs" in line for line in seen)
        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).json()["status"] == "ok"
            except httpx.TransportError:
                return False  # the API process may still be starting on a busy machine

        wait_for(healthy, timeout_s=30, what="the API's health")
        # Where the metrics are is said, and each service serves its own.
        assert any(line.startswith("metrics http://127.0.0.1:<port>/metrics") and f"api :{metrics_base}" in line
                   and f"ingest :{metrics_base + 1}" in line for line in seen)
        assert value(scrape(metrics_base), "ironsight_api_requests_total", route="/api/v1/health",
                     status_class="2xx") >= 1
        wait_for(lambda: value(scrape(metrics_base + 1), "ironsight_ingest_messages_total", worker="ingest-1") > 0,
                 timeout_s=30, what="ingest's metrics counting messages")
        # No password is configured: one was generated, printed, and kept for the next run.
        username, password = next(m.groups() for line in seen if (m := LOGIN.match(line)))
        assert password in (tmp_path / "data" / "credentials.json").read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/equipment", timeout=5).status_code == 401
        token = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/token", timeout=30,
                           data={"username": username, "password": password}).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        fleet = httpx.get(f"http://127.0.0.1:{port}/api/v1/equipment", timeout=5, headers=admin)
        assert fleet.json()["count"] == 20
        # The first simulated machines answer remote commands through the devices worker.
        base = f"http://127.0.0.1:{port}/api/v1/equipment/EQ-00001"
        command = httpx.post(f"{base}/commands", json={"kind": "snapshot"}, timeout=5, headers=admin).json()
        wait_for(lambda: httpx.get(f"{base}/commands/{command['id']}", timeout=5,
                                   headers=admin).json()["state"] == "executed",
                 timeout_s=30, what="a snapshot command executed")
        assert httpx.get(f"{base}/presence", timeout=5, headers=admin).json()["connected"] is True
        descendants = psutil.Process(process.pid).children(recursive=True)
        assert len(descendants) >= 6  # api, ingest, devices, diagnostics, alarms, sim (+ embedded services)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    assert code == 0
    gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, f"left running: {[p.pid for p in alive]}"
    if services == "embedded":
        leftovers = [p for p in psutil.process_iter(["cmdline"])
                     if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
        assert not leftovers, f"embedded services left running: {leftovers}"
