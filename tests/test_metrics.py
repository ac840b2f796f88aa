"""Prometheus metrics (core.metrics) against the real services: scraped over HTTP, as Prometheus does."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from core import metrics, topics
from core.register import EquipmentRecord, register_equipment
from core.shards import SHARD_COUNT
from core.telemetry import Reading, encode_message
from ironsight.processes import free_tcp_port, port_accepts
from tests.helpers import ApiServer, Publisher, drain_outbox, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def scraped_or_empty(port: int) -> Samples:
    try:
        return scrape(port)
    except httpx.TransportError:
        return {}  # not serving yet


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports nothing is bound to, below the kernel's ephemeral range
    (whose ports outgoing connections take at any moment: a worker's own database connection could
    take the port next to one the kernel just handed out)."""
    low = 20000
    for _ in range(200):
        base = random.randrange(low, 32000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError(f"no {count} free ports in a row")


def reading(ts: datetime, oil: float = 80.0) -> Reading:
    return Reading(ts=ts, oil_temp_c=oil, engine_rpm=1500.0, lat=51.9, lon=4.1, engine_hours=10.0)


def test_each_ingest_process_serves_its_own_counters_of_messages_readings_and_dead_letters(settings, conn, tmp_path):
    """``ironsight ingest --workers 2`` with IRONSIGHT_METRICS_PORT: the children serve on base and
    base + 1, and between them count every message, reading and dead letter the database got."""
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    base = free_ports(2)
    name = f"metrics-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRONSIGHT_")}
    env.update(IRONSIGHT_DATABASE_URL=settings.database_url, IRONSIGHT_MQTT_URL=settings.mqtt_url,
               IRONSIGHT_TOPIC_ROOT=settings.topic_root, IRONSIGHT_METRICS_PORT=str(base))
    log_path = tmp_path / "ingest.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "ironsight", "ingest", "--workers", "2", "--name", name],
                               env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    workers = {base: f"{name}-1", base + 1: f"{name}-2"}
    publisher = None
    try:
        # Both children subscribed (their own gauge says so): the shared subscription reaches either.
        ready = lambda: all(value(scraped_or_empty(port), "ironsight_mqtt_connected", session=worker) == 1  # noqa: E731
                            for port, worker in workers.items())
        try:
            wait_for(ready, timeout_s=30, what="both ingest processes ready")
        except AssertionError as exc:
            raise AssertionError(log_path.read_text()[-4000:]) from exc
        for port, worker in workers.items():
            assert value(scrape(port), "ironsight_worker_info", worker=worker, command="ingest") == 1
        publisher = Publisher(settings.mqtt_url, f"{settings.topic_root}-pub")
        topic = topics.telemetry_topic(settings.topic_root, "EX-1")
        now = datetime.now(UTC).replace(microsecond=0)
        good = [encode_message(i, [reading(now - timedelta(seconds=60 - i))]) for i in range(6)]
        for payload in good:
            publisher.publish(topic, payload)
        publisher.publish(topic, good[0])  # a controller's retry: a duplicate
        publisher.publish(topic, b"this is not json")
        publisher.publish(topic, b"\x00\x01\x02")
        publisher.publish(topics.telemetry_topic(settings.topic_root, "NOBODY-9"), good[1])
        mixed = {"v": 1, "seq": 50, "readings": [{"ts": now.isoformat(), "oil_temp_c": 81.0},
                                                  {"ts": (now - timedelta(seconds=90)).isoformat(),
                                                   "oil_temp_c": "hot"}]}
        publisher.publish(topic, json.dumps(mixed).encode())
        messages = len(good) + 5

        def total(metric: str, **labels: str) -> float:
            return sum(value(scrape(port), metric, worker=worker, **labels) for port, worker in workers.items())

        wait_for(lambda: total("ironsight_ingest_messages_total") == messages, timeout_s=20,
                 what=f"{messages} messages counted")
        assert total("ironsight_ingest_readings_total", outcome="stored") == len(good) + 1
        assert total("ironsight_ingest_readings_total", outcome="duplicate") == 1
        assert total("ironsight_dead_letters_total", reason="not_json") == 2
        assert total("ironsight_dead_letters_total", reason="unknown_equipment") == 1
        assert total("ironsight_dead_letters_total", reason="bad_type") == 1
        assert total("ironsight_ingest_batch_commit_seconds_count") >= 1
        assert total("ironsight_ingest_batch_commit_seconds_sum") > 0
        # The exporters and the database tell the same story.
        stored, duplicates, dead = conn.execute(
            "SELECT sum(readings_stored), sum(readings_duplicate), sum(dead_letters) FROM ingest_stats").fetchone()
        conn.commit()
        assert (stored, duplicates, dead) == (len(good) + 1, 1, 4)
        # Labels are bounded: worker names and reason codes, never an equipment id.
        for port in workers:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert "EX-1" not in text and "NOBODY-9" not in text
    finally:
        if publisher is not None:
            publisher.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            log_file.close()
    assert not port_accepts(base) and not port_accepts(base + 1)


def test_the_api_counts_requests_by_route_template_and_status_class(settings, database_url):
    api = ApiServer(settings, database_url)
    exporter = metrics.start_exporter(free_tcp_port(), worker="api", command="api")
    assert exporter is not None
    try:
        before = scrape(exporter.port)
        client = api.client()
        assert client.get("/health").status_code == 200
        assert client.get("/equipment/NO-SUCH-MACHINE").status_code == 404
        assert httpx.get(api.url + "/api/v1/equipment", timeout=5).status_code == 401
        assert httpx.get(api.url + "/no/such/path", timeout=5).status_code == 404
        after = scrape(exporter.port)

        def moved(**labels: str) -> float:
            return (value(after, "ironsight_api_requests_total", **labels)
                    - value(before, "ironsight_api_requests_total", **labels))

        assert moved(method="GET", route="/api/v1/health", status_class="2xx") == 1
        assert moved(method="GET", route="/api/v1/equipment/{equipment_id}", status_class="4xx") == 1
        assert moved(method="GET", route="/api/v1/equipment", status_class="4xx") == 1
        assert moved(method="GET", route="unmatched", status_class="4xx") == 1
        assert (value(after, "ironsight_api_request_duration_seconds_count", route="/api/v1/health")
                > value(before, "ironsight_api_request_duration_seconds_count", route="/api/v1/health"))
        assert not any("NO-SUCH-MACHINE" in label for _, labels in after for _, label in labels)
    finally:
        exporter.close()
        api.close()


def test_diagnostics_and_alarms_count_rounds_readings_shards_faults_and_ticket_retries(database_url, conn):
    from alarms.worker import TICKET_SEVERITIES, AlarmsWorker
    from diagnostics.worker import DiagnosticsWorker
    from ingest.writer import Batch, BatchWriter

    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    now = datetime.now(UTC).replace(microsecond=0)
    hot = [("EX-1", reading(now - timedelta(seconds=120 - 5 * i), oil=140.0)) for i in range(20)]
    BatchWriter(conn, "ingest-test", now).write(Batch(messages=1, readings=hot, sequences={"EX-1": [1]}))
    name = f"diag-{uuid.uuid4().hex[:6]}"

    def sample(metric: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(metric, labels) or 0.0

    diagnostics = DiagnosticsWorker(database_url, name=name)
    drain_outbox(diagnostics.process_available, conn, "accepted_batches", diagnostics.position, timeout_s=30)
    assert sample("ironsight_diagnostics_readings_total", worker=name, kind="live") == len(hot)
    assert sample("ironsight_diagnostics_round_seconds_count", worker=name) >= 1
    assert sample("ironsight_owned_shards", consumer="diagnostics", worker=name) == SHARD_COUNT
    assert sample("ironsight_diagnostics_checkpoint_writes_total", worker=name) >= SHARD_COUNT
    assert sample("ironsight_fault_changes_total", worker=name, kind="raised") >= 1
    assert sample("ironsight_consumer_lag_seconds", consumer="diagnostics", worker=name) >= 0
    diagnostics.shutdown(conn)
    assert sample("ironsight_owned_shards", consumer="diagnostics", worker=name) == 0

    # The alarms worker's ticket API is unreachable: the request fails, then is retried.
    alarms = AlarmsWorker(database_url, "http://127.0.0.1:9", api_key="unused")
    try:
        before = {metric: sample(metric, worker="alarms", **labels) for metric, labels in (
            ("ironsight_alarms_total", {"outcome": "raised"}),
            ("ironsight_alarm_ticket_requests_total", {"result": "failed"}),
            ("ironsight_alarm_ticket_retries_total", {}))}
        drain_outbox(alarms.process_fault_events, conn, "fault_events", alarms.position, timeout_s=30)
        raised = sample("ironsight_alarms_total", worker="alarms", outcome="raised") - before["ironsight_alarms_total"]
        assert raised >= 1
        alarms.open_pending_tickets(conn)
        with conn.transaction():
            conn.execute("UPDATE alarms SET next_ticket_try_at = now() WHERE ticket_id IS NULL")
        alarms.open_pending_tickets(conn)
        failed = (sample("ironsight_alarm_ticket_requests_total", worker="alarms", result="failed")
                  - before["ironsight_alarm_ticket_requests_total"])
        retried = sample("ironsight_alarm_ticket_retries_total", worker="alarms") - before[
            "ironsight_alarm_ticket_retries_total"]
        ticketed = conn.execute("SELECT count(*) FROM alarms WHERE severity = ANY(%s)",
                                (list(TICKET_SEVERITIES),)).fetchone()[0]
        conn.commit()
        assert ticketed >= 1 and failed == 2 * ticketed and retried == ticketed
    finally:
        alarms.shutdown(conn)
        alarms.tickets.close()
        alarms.webhook.close()


# --- ports ---


def test_ironsight_run_gives_every_service_a_port_of_its_own():
    names = ["api", "ingest", "devices", "diagnostics-1", "diagnostics-2", "alarms", "sla", "tracking", "crew",
             "sim", "sim-2"]
    ports = metrics.run_ports(None, names)
    assert ports == {"api": 9400, "ingest": 9401, "devices": 9402, "alarms": 9403, "sla": 9404, "tracking": 9405,
                     "diagnostics-1": 9406, "diagnostics-2": 9407}
    assert metrics.run_ports(9500, names)["diagnostics-2"] == 9507
    assert metrics.run_ports(0, names) == {}
    line = metrics.describe_ports(ports, "127.0.0.1")
    assert line.startswith("metrics http://127.0.0.1:<port>/metrics") and "ingest :9401" in line
    assert metrics.port_env(9401) == {"IRONSIGHT_METRICS_PORT": "9401"} and metrics.port_env(None) == {}


def test_worker_processes_number_their_ports_and_only_services_serve():
    assert metrics.numbered_env(2, {"IRONSIGHT_METRICS_PORT": "9600", "X": "y"}) == {
        "IRONSIGHT_METRICS_PORT": "9602", "X": "y"}
    assert metrics.numbered_env(2, {"IRONSIGHT_METRICS_PORT": "0"})["IRONSIGHT_METRICS_PORT"] == "0"
    assert "IRONSIGHT_METRICS_PORT" not in metrics.numbered_env(1, {})
    port = free_tcp_port()
    for command, workers in (("sim", 1), ("crew", 1), ("migrate", 1), ("ingest", 3)):
        assert metrics.start_exporter_for(command, port=port, host="127.0.0.1", name=None, workers=workers) is None
    assert metrics.start_exporter(None, worker="x", command="ingest") is None
    assert metrics.start_exporter(0, worker="x", command="ingest") is None


def test_a_port_already_taken_costs_the_exporter_not_the_worker(caplog):
    first = metrics.start_exporter(free_tcp_port(), worker="first", command="ingest")
    assert first is not None
    try:
        with caplog.at_level("WARNING"):
            assert metrics.start_exporter(first.port, worker="second", command="ingest") is None
        assert "cannot serve metrics" in caplog.text
        assert value(scrape(first.port), "ironsight_worker_info", worker="first") == 1
    finally:
        first.close()


@pytest.mark.parametrize("path", ["/api/v1/equipment/{equipment_id}", "/docs-assets"])
def test_route_templates_come_from_the_matched_route(path):
    class Route:
        def __init__(self, template: str) -> None:
            self.path = template

    assert metrics.route_template({"route": Route(path)}) == path
    assert metrics.route_template({}) == "unmatched"


def test_the_scrape_example_follows_the_compose_stack():
    from pathlib import Path

    import yaml

    deploy = Path(__file__).resolve().parents[1] / "deploy"
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    scrape_config = yaml.safe_load((deploy / "prometheus.yml").read_text())
    (job,) = scrape_config["scrape_configs"]
    (targets,) = job["dns_sd_configs"]
    environment = compose["x-ironsight"]["environment"]
    assert targets["port"] == int(environment["IRONSIGHT_METRICS_PORT"])
    assert environment["IRONSIGHT_METRICS_HOST"] == "0.0.0.0"  # reachable from the compose network
    services = compose["services"]
    for name in targets["names"]:
        assert services[name]["command"][0] in metrics.EXPORTING_COMMANDS, name
    serving = {name for name, service in services.items()
               if (service.get("command") or [""])[0] in metrics.EXPORTING_COMMANDS}
    assert serving == set(targets["names"])
