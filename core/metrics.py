"""IronSight's own Prometheus metrics: every one is defined here, and each process serves them.

Names follow Prometheus' conventions: ``ironsight_`` first, counters end in ``_total``, durations
are ``_seconds``. Labels are bounded sets: the worker's configured name (``ingest-1``,
``diagnostics-2``, ``devices`` …), a reason code, a state, a route template — never an equipment,
vehicle, alarm or ticket id.

Each worker process serves its own registry over HTTP (``start_exporter``: prometheus_client's
``start_http_server``, every path answers with the metrics) on ``IRONSIGHT_METRICS_PORT`` of
``IRONSIGHT_METRICS_HOST`` (127.0.0.1 unless set); unset or 0 means no exporter. One port per
process, not prometheus_client's multiprocess mode (which needs a shared directory and cleanup of
dead processes' files): ``ironsight ingest --workers N`` gives its children base, base + 1, …
base + N - 1 (``numbered_env``), and ``ironsight run`` gives every service its own port from 9400
on (``run_ports``). A port already taken is logged and the worker runs on without an exporter.

Where a worker keeps a counter of its own (``BadInputLog``, ``handled`` …), the metric is updated
at the same place. The per-worker bundles below bind the labels once, so that the workers' code
stays one line per measurement.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, start_http_server

log = logging.getLogger(__name__)

PORT_VARIABLE = "IRONSIGHT_METRICS_PORT"
# `ironsight run` serves metrics from this port on unless IRONSIGHT_METRICS_PORT says otherwise (0: none).
RUN_BASE_PORT = 9400
# The commands whose process serves metrics (the services; not the simulators, not one-shot commands).
EXPORTING_COMMANDS = ("api", "ingest", "devices", "diagnostics", "alarms", "sla", "tracking", "notify")
# `ironsight run`'s ports: base + offset; diagnostics-1, diagnostics-2 … follow the fixed ones.
RUN_PORT_OFFSETS = {"api": 0, "ingest": 1, "devices": 2, "alarms": 3, "sla": 4, "tracking": 5}
# Services added later take the ports after the last diagnostics worker's, so that the ports above stay.
RUN_LATER_SERVICES = ("notify",)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# --- every process ---

WORKER_INFO = Gauge("ironsight_worker_info", "1 for the worker whose process serves these metrics",
                    ["worker", "command"])
DB_CONNECTION_ERRORS = Counter(
    "ironsight_db_connection_errors_total",
    "Database connections refused or lost; each is retried with backoff", ["worker"])

# --- MQTT sessions (core.mqtt.Session with a metrics label) ---

MQTT_CONNECTS = Counter("ironsight_mqtt_connects_total", "Connections the broker accepted", ["session"])
MQTT_CONNECT_REFUSALS = Counter("ironsight_mqtt_connect_refusals_total", "Connections the broker refused",
                                ["session"])
MQTT_DISCONNECTS = Counter("ironsight_mqtt_disconnects_total", "Connections lost or closed", ["session"])
MQTT_CONNECTED = Gauge("ironsight_mqtt_connected", "1 while connected with every subscription granted",
                       ["session"])
MQTT_DROPPED = Counter("ironsight_mqtt_dropped_messages_total",
                       "Received messages dropped before handling, by reason (inbox_full: QoS 0 beyond the inbox)",
                       ["session", "reason"])
MQTT_HANDLER_ERRORS = Counter("ironsight_mqtt_handler_errors_total",
                              "Exceptions of a message callback in the network thread, by exception type",
                              ["session", "reason"])
MQTT_INBOX = Gauge("ironsight_mqtt_inbox_messages", "Messages (and notices) waiting in the session's inbox",
                   ["session"])

# --- refused input (ingest and devices write dead_letters) ---

DEAD_LETTERS = Counter("ironsight_dead_letters_total", "Refused device input written to dead_letters, by reason",
                       ["worker", "reason"])
HANDLING_FAILURES = Counter("ironsight_handling_failures_total",
                            "Unforeseen failures handling one message (dead-lettered as handler_error), by "
                            "exception type", ["worker", "reason"])
UNSTORABLE = Counter("ironsight_unstorable_messages_total",
                     "Messages dropped because not even their dead letter could be written, by reason",
                     ["worker", "reason"])

# --- ingest ---

INGEST_MESSAGES = Counter("ironsight_ingest_messages_total", "Telemetry messages whose batch committed", ["worker"])
INGEST_READINGS = Counter("ironsight_ingest_readings_total",
                          "Readings of committed batches: stored, or duplicate (already stored)", ["worker", "outcome"])
INGEST_COMMIT_SECONDS = Histogram("ironsight_ingest_batch_commit_seconds",
                                  "Time to write and commit one batch (its _count: batches committed)", ["worker"],
                                  buckets=_LATENCY_BUCKETS)
INGEST_BATCH_FALLBACKS = Counter("ironsight_ingest_batch_fallbacks_total",
                                 "Batches that failed whole and were written again message by message", ["worker"])
# The sequence job (ingest.sequences): what the controllers' message sequence numbers say.
INGEST_SEQUENCE_GAPS = Counter("ironsight_ingest_sequence_gaps_total",
                               "Gaps found in a controller's message sequence numbers", ["worker"])
INGEST_SEQUENCE_MESSAGES = Counter(
    "ironsight_ingest_sequence_messages_total",
    "Messages by what their sequence numbers say: missed (a gap), healed (a missing one arrived), duplicate, "
    "lost (given up)", ["worker", "outcome"])
INGEST_SEQUENCE_RESTARTS = Counter("ironsight_ingest_sequence_restarts_total",
                                   "Controllers whose sequence numbers started again", ["worker"])
INGEST_LATE_READINGS = Counter(
    "ironsight_ingest_late_readings_total",
    "Readings older than the machine's newest by more than the late window: stored as backlog, counters not taken",
    ["worker"])

# --- devices ---

DEVICES_MESSAGES = Counter("ironsight_devices_messages_total",
                           "Status, ack and provisioning messages handled and acknowledged", ["worker"])
COMMANDS = Counter("ironsight_commands_total",
                   "Remote command events: sent (the broker took it), the controller's answers (received, executed, "
                   "rejected), expired", ["event"])

# --- diagnostics and alarms (sharded consumers) ---

OWNED_SHARDS = Gauge("ironsight_owned_shards", "Equipment shards this worker holds", ["consumer", "worker"])
CONSUMER_LAG = Gauge("ironsight_consumer_lag_seconds",
                     "Age of what the worker's last round consumed (0 when it found nothing new): for diagnostics "
                     "the batch's acceptance, for alarms the fault's storing or clearing", ["consumer", "worker"])
DIAGNOSTICS_ROUND_SECONDS = Histogram("ironsight_diagnostics_round_seconds",
                                      "Rounds that read new batches, by duration (its _count: rounds)", ["worker"],
                                      buckets=_LATENCY_BUCKETS)
DIAGNOSTICS_READINGS = Counter("ironsight_diagnostics_readings_total",
                               "Readings diagnosed: live, or late (replayed with their surroundings)",
                               ["worker", "kind"])
DIAGNOSTICS_CHECKPOINTS = Counter("ironsight_diagnostics_checkpoint_writes_total",
                                  "Shard checkpoints written (cursor and engine state)", ["worker"])
FAULT_CHANGES = Counter("ironsight_fault_changes_total",
                        "Fault changes written: raised, cleared, revised (diagnosis), backfilled", ["worker", "kind"])
ALARMS = Counter("ironsight_alarms_total",
                 "Alarm changes from fault events: raised, reopened, occurrence, cleared", ["worker", "outcome"])
ALARM_TICKETS = Counter("ironsight_alarm_ticket_requests_total",
                        "Tickets the alarms worker POSTed: opened, or failed (retried with backoff)",
                        ["worker", "result"])
ALARM_TICKET_RETRIES = Counter("ironsight_alarm_ticket_retries_total",
                               "Ticket POSTs for an alarm whose earlier attempt had failed", ["worker"])

# --- tickets: tracking and SLA ---

TRACKING_POSITIONS = Counter("ironsight_tracking_positions_total", "Van positions applied", [])
TRACKING_REJECTED = Counter("ironsight_tracking_rejected_positions_total", "Van positions refused, by reason",
                            ["reason"])
SLA_ALERTS = Counter("ironsight_sla_alerts_total", "SLA warnings and breaches recorded, by timer", ["timer", "kind"])

# --- notifications ---

NOTIFICATIONS = Counter(
    "ironsight_notifications_total",
    "Notifications by channel and outcome: queued, unsendable (no address), sent, retried (an attempt failed, "
    "tried again later), failed (refused for good, or given up), unsent (the channel is not configured)",
    ["channel", "outcome"])
NOTIFICATION_SEND_SECONDS = Histogram("ironsight_notification_send_seconds",
                                      "Time of one delivery attempt, by channel", ["channel"],
                                      buckets=_LATENCY_BUCKETS)

# --- api ---

API_REQUESTS = Counter("ironsight_api_requests_total", "HTTP requests answered, by route template and status class",
                       ["method", "route", "status_class"])
API_REQUEST_SECONDS = Histogram("ironsight_api_request_duration_seconds", "HTTP request duration by route template",
                                ["method", "route"], buckets=_LATENCY_BUCKETS)


def by_reason(counter: Counter, **labels: str) -> Callable[[str], None]:
    """``BadInputLog(on_record=…)``: count each recorded reason in ``counter`` (other labels fixed)."""
    def record(reason: str) -> None:
        counter.labels(**labels, reason=reason).inc()
    return record


def db_connection_error(worker: str) -> None:
    DB_CONNECTION_ERRORS.labels(worker=worker).inc()


def notification(channel: str, outcome: str, seconds: float | None = None) -> None:
    """One notification's outcome (and, for an attempt, how long it took)."""
    NOTIFICATIONS.labels(channel=channel, outcome=outcome).inc()
    if seconds is not None:
        NOTIFICATION_SEND_SECONDS.labels(channel=channel).observe(seconds)


# --- per-worker bundles ---


class SessionMetrics:
    """An MQTT session's counters, bound to its label; the gauges read the session when scraped."""

    def __init__(self, label: str, inbox_size: Callable[[], int], connected: Callable[[], bool]) -> None:
        self.connects = MQTT_CONNECTS.labels(session=label)
        self.refusals = MQTT_CONNECT_REFUSALS.labels(session=label)
        self.disconnects = MQTT_DISCONNECTS.labels(session=label)
        self.dropped = by_reason(MQTT_DROPPED, session=label)
        self.handler_errors = by_reason(MQTT_HANDLER_ERRORS, session=label)
        MQTT_INBOX.labels(session=label).set_function(inbox_size)
        MQTT_CONNECTED.labels(session=label).set_function(lambda: float(connected()))


class IngestMetrics:
    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._messages = INGEST_MESSAGES.labels(worker=worker)
        self._stored = INGEST_READINGS.labels(worker=worker, outcome="stored")
        self._duplicate = INGEST_READINGS.labels(worker=worker, outcome="duplicate")
        self._commit = INGEST_COMMIT_SECONDS.labels(worker=worker)
        self.fallbacks = INGEST_BATCH_FALLBACKS.labels(worker=worker)
        self.late_readings = INGEST_LATE_READINGS.labels(worker=worker)
        self.dead_letters = by_reason(DEAD_LETTERS, worker=worker)
        self.failures = by_reason(HANDLING_FAILURES, worker=worker)
        self.unstorable = by_reason(UNSTORABLE, worker=worker)

    def committed(self, messages: int, stored: int, duplicate: int, seconds: float) -> None:
        self._messages.inc(messages)
        self._stored.inc(stored)
        self._duplicate.inc(duplicate)
        self._commit.observe(seconds)

    def db_error(self) -> None:
        db_connection_error(self.worker)


class SequenceMetrics:
    def __init__(self, worker: str) -> None:
        self._gaps = INGEST_SEQUENCE_GAPS.labels(worker=worker)
        self._messages = {outcome: INGEST_SEQUENCE_MESSAGES.labels(worker=worker, outcome=outcome)
                          for outcome in ("missed", "healed", "duplicate", "lost")}
        self._restarts = INGEST_SEQUENCE_RESTARTS.labels(worker=worker)

    def folded(self, result: Any) -> None:
        """``result``: an ingest.sequences.FoldResult (core does not import ingest)."""
        self._gaps.inc(result.gaps)
        self._restarts.inc(result.restarts)
        for outcome, count in (("missed", result.missed), ("healed", result.healed),
                               ("duplicate", result.duplicates), ("lost", result.lost)):
            self._messages[outcome].inc(count)


class DevicesMetrics:
    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.messages = DEVICES_MESSAGES.labels(worker=worker)
        self.dead_letters = by_reason(DEAD_LETTERS, worker=worker)
        self.failures = by_reason(HANDLING_FAILURES, worker=worker)
        self.unstorable = by_reason(UNSTORABLE, worker=worker)

    @staticmethod
    def command(event: str, count: int = 1) -> None:
        COMMANDS.labels(event=event).inc(count)

    def db_error(self) -> None:
        db_connection_error(self.worker)


class ShardOwner(Protocol):
    """What holds a sharded worker's shards (core.shards.ShardLeases)."""

    owned: set[int]


class _ShardedMetrics:
    def __init__(self, consumer: str, worker: str, leases: ShardOwner) -> None:
        self.worker = worker
        self._lag = CONSUMER_LAG.labels(consumer=consumer, worker=worker)
        # Read when scraped; holds the leases only, not the worker.
        OWNED_SHARDS.labels(consumer=consumer, worker=worker).set_function(lambda: len(leases.owned))

    def caught_up(self) -> None:
        self._lag.set(0)

    def consumed_up_to(self, at: datetime) -> None:
        """The last round consumed something that happened (was accepted, stored) at ``at``."""
        self._lag.set(max(0.0, (datetime.now(UTC) - at).total_seconds()))


class DiagnosticsMetrics(_ShardedMetrics):
    def __init__(self, worker: str, leases: ShardOwner) -> None:
        super().__init__("diagnostics", worker, leases)
        self._round = DIAGNOSTICS_ROUND_SECONDS.labels(worker=worker)
        self._live = DIAGNOSTICS_READINGS.labels(worker=worker, kind="live")
        self._late = DIAGNOSTICS_READINGS.labels(worker=worker, kind="late")
        self.checkpoints = DIAGNOSTICS_CHECKPOINTS.labels(worker=worker)

    def round(self, seconds: float, newest_accepted_at: datetime) -> None:
        self._round.observe(seconds)
        self.consumed_up_to(newest_accepted_at)

    def readings(self, live: int, late: int) -> None:
        self._live.inc(live)
        self._late.inc(late)

    def fault_change(self, kind: str) -> None:
        FAULT_CHANGES.labels(worker=self.worker, kind=kind).inc()


class AlarmsMetrics(_ShardedMetrics):
    def __init__(self, worker: str, leases: ShardOwner) -> None:
        super().__init__("alarms", worker, leases)
        self.ticket_retries = ALARM_TICKET_RETRIES.labels(worker=worker)

    def alarm(self, outcome: str) -> None:
        ALARMS.labels(worker=self.worker, outcome=outcome).inc()

    def ticket(self, result: str) -> None:
        ALARM_TICKETS.labels(worker=self.worker, result=result).inc()


# --- the API: a plain ASGI middleware (streamed answers stay streamed) ---

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/api/v1/equipment/{equipment_id}``), never the path
    itself; ``unmatched`` when no route matched (a 404 for an unknown path, or a refusal before routing)."""
    # FastAPI keeps the route of an included router as it was declared (without the prefix) and the
    # effective one, with the prefix, beside it.
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    for route in (effective, scope.get("route")):
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        if isinstance(path, str) and path:
            return path
    return "unmatched"


class RequestMetrics:
    """Count each HTTP request by method, route template and status class, and time it."""

    def __init__(self, app: Asgi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            route = route_template(scope)
            API_REQUESTS.labels(method=method, route=route, status_class=f"{status // 100}xx").inc()
            API_REQUEST_SECONDS.labels(method=method, route=route).observe(time.perf_counter() - began)


# --- the exporter ---


@dataclass
class Exporter:
    host: str
    port: int
    _server: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_exporter(port: int | None, *, host: str = "127.0.0.1", worker: str, command: str) -> Exporter | None:
    """Serve this process's metrics on ``host:port`` from a daemon thread; None when ``port`` is
    unset or 0, or already taken (logged: the worker runs on without an exporter)."""
    if not port:
        return None
    WORKER_INFO.labels(worker=worker, command=command).set(1)
    # Half the series: no ``_created`` sample beside every counter (a restart shows as a reset anyway).
    disable_created_metrics()
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("%s: cannot serve metrics on %s:%d (%s); running without", worker, host, port, exc)
        return None
    log.info("%s: metrics on http://%s:%d/metrics", worker, host, port)
    return Exporter(host, port, server)


def start_exporter_for(command: str, *, port: int | None, host: str, name: str | None,
                       workers: int = 1) -> Exporter | None:
    """The exporter of an ``ironsight <command>`` process: the services only, and not the parent of
    ``--workers N`` (each child serves its own, ``numbered_env``)."""
    if command not in EXPORTING_COMMANDS or workers > 1:
        return None
    return start_exporter(port, host=host, worker=name or command, command=command)


def numbered_env(index: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the ``index``-th (from 0) child of ``--workers N``: its own metrics port,
    base + index, when the parent has one."""
    env = dict(os.environ if environ is None else environ)
    base = env.get(PORT_VARIABLE, "").strip()
    if base.isdigit() and int(base) > 0:
        env[PORT_VARIABLE] = str(int(base) + index)
    return env


def run_ports(base: int | None, workers: Iterable[str]) -> dict[str, int]:
    """``ironsight run``'s metrics port of each service it starts (name → port): ``base`` (default
    RUN_BASE_PORT; 0: none) + RUN_PORT_OFFSETS, then diagnostics-1, -2 … on the ports after those, then
    RUN_LATER_SERVICES (notify)."""
    if base == 0:
        return {}
    base = RUN_BASE_PORT if base is None else base
    ports: dict[str, int] = {}
    names = list(workers)
    for name in names:
        if name in RUN_PORT_OFFSETS:
            ports[name] = base + RUN_PORT_OFFSETS[name]
        elif name.startswith("diagnostics-") and name.removeprefix("diagnostics-").isdigit():
            ports[name] = base + len(RUN_PORT_OFFSETS) + int(name.removeprefix("diagnostics-")) - 1
    after = max(ports.values(), default=base + len(RUN_PORT_OFFSETS) - 1)
    for name in (n for n in RUN_LATER_SERVICES if n in names):
        after += 1
        ports[name] = after
    return ports


def port_env(port: int | None) -> dict[str, str]:
    """The environment that gives one process its metrics port (nothing when it has none)."""
    return {PORT_VARIABLE: str(port)} if port else {}


def describe_ports(ports: Mapping[str, int], host: str) -> str:
    """One line saying where each process serves its metrics."""
    listed = "  ".join(f"{name} :{port}" for name, port in sorted(ports.items(), key=lambda item: item[1]))
    return f"metrics http://{host}:<port>/metrics   {listed}"
