"""``ironsight run``: services, worker processes, a live status line, and a clean stop.

Each worker is its own OS process (``python -m ironsight <worker>``) in its own session, so a
Ctrl-C in the terminal reaches only this supervisor, which then stops everything in order: the
fleet first (no new data), then the workers (ingest finishes its batch), then the broker and the
database it started. A worker that dies is restarted with backoff.

The embedded broker is secured unless asked otherwise (``--insecure-broker``): Mosquitto refuses
anonymous clients and confines each account to its topics, with the password and ACL files the
devices worker keeps equal to the device registry (SIGHUP on change), as in production. Each
process gets the account it needs and nothing more: ingest ``ingest``, the devices and tracking
workers ``backend``, the simulators ``simulator`` (the simulation-only repair notices) with the
shared ``provisioning`` credential for the controllers, which then connect with their own; the
other processes get no broker access at all. Passwords are generated at the first run and kept in
the data directory like the admin's.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import psycopg

from alarms.queries import alarms_after, count_active
from core import metrics
from core.db import connect
from core.mqtt import parse_mqtt_url
from core.outbox import lag_seconds
from core.settings import Settings
from device_sim.simulated_fleet import repaired_topic
from devices.broker_auth import (
    BACKEND_USER,
    INGEST_USER,
    PROVISIONING_USER,
    BrokerAuthSync,
    ServicePasswords,
    write_static_account,
)
from ingest.queries import count_online, readings_stored_total
from ironsight.commissioning import SIM_CONTROLLERS_PER_PROCESS
from ironsight.embedded_broker import PID_FILE, find_mosquitto, start_embedded_broker
from ironsight.embedded_postgres import start_embedded_postgres
from ironsight.processes import die_with_parent
from ironsight.schema import migrate
from ironsight.world import seed_customers, seed_service_world
from notifications.sinks import HttpSink, MailSink
from tickets.aftercare import queue_counts
from tickets.calls import list_calls
from tickets.service import count_by_state, events_after, last_event_id
from tickets.workflow import OPEN_STATES

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
RESTART_BACKOFF_MAX_S = 30.0
# The first simulated machines answer remote commands (lock, snapshot …) for a demo through the API.
DEMO_FULL_CONTROLLERS = 5
# ``ironsight run`` refits the diagnostic models this often (the first fit needs about 15 minutes of history).
TRAIN_EVERY_MIN = 5.0
# What ``ironsight run`` starts besides the services: the simulated fleet and service crews. A
# deployment runs the services only (deploy/docker-compose.yml; a test holds the two together).
SIMULATORS = ("crew", "sim")
# New alarms printed per status line at most; the API lists them all.
ANNOUNCE_MAX_ALARMS = 10
# The latest calls the status line looks through for the last outcome (the newest may still be on).
RECENT_CALLS = 5
# The simulators' own broker account (kept by hand beside the generated ones, devices.broker_auth):
# only the simulation's repair notices, which the simulated crew sends and the simulated fleet hears.
SIMULATOR_USER = "simulator"
# What ``ironsight run`` generates once and keeps in <data dir>/credentials.json (mode 0600).
KEPT_SECRETS = ("admin_password", "alarms_api_key", "mqtt_ingest_password", "mqtt_backend_password",
                "mqtt_provisioning_password", "mqtt_simulator_password")
ALL_WORKERS = "*"


def raise_open_files_limit(wanted: int = 65536) -> None:
    """Every simulated controller has a connection of its own on a secured broker: about three file
    descriptors each in the simulator (paho's socket and wake-up pair) and one in the broker, more
    than the soft limit of some systems (256 on macOS, 1024 on many Linux) at a few hundred machines.
    Raise the soft limit towards the hard one; the child processes inherit it."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        for limit in (target, 10240):  # macOS caps the soft limit at kern.maxfilesperproc
            if limit <= soft:
                continue
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
                return
            except (ValueError, OSError):
                continue


def cores_to_spare() -> int:
    """Diagnostics processes for this machine: a core each beyond the one that ingest, the broker
    and the database share at demo scale."""
    return max(1, (os.cpu_count() or 1) - 1)


@dataclass
class Worker:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    # This process's own environment on top of the common one (its broker account).
    env: dict[str, str] = field(default_factory=dict, repr=False)
    restarts: int = 0
    next_start_at: float = 0.0
    log_file: IO[bytes] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, settings: Settings, *, controllers: int, fault_share: float, faults: tuple[str, ...],
                 interval_s: float, status_every_s: float = 5.0, speed: float = 1.0,
                 diagnostics_workers: int | None = None, calls_per_hour: float | None = None,
                 portal_requests_per_hour: float | None = None) -> None:
        self.settings = settings
        self.controllers = controllers
        self.fault_share = fault_share
        self.faults = faults
        self.interval_s = interval_s
        self.status_every_s = status_every_s
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.diagnostics_workers = diagnostics_workers or cores_to_spare()
        # The simulated customers' rates; None: the crew's own defaults.
        self.customer_rates = {"--calls-per-hour": calls_per_hour,
                               "--portal-requests-per-hour": portal_requests_per_hour}
        self.workers: list[Worker] = []
        self._services: list = []
        # Whether the broker refuses anonymous clients and confines each account (the embedded Mosquitto).
        self.secured_broker = False

    def run(self, stop: threading.Event) -> int:
        settings = self.settings
        data_dir = settings.data_dir.resolve()
        logs = data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        raise_open_files_limit()
        try:
            database_url = settings.database_url or self._embedded_database(data_dir)
            applied = migrate(database_url)
            with connect(database_url, application_name="ironsight-run") as conn:
                seed_service_world(conn)
                seed_customers(conn)
            self._say(f"database ready ({len(applied)} migrations applied; service stations, engineers, vans, "
                      "warehouses, customers and their contacts registered)")
            admin_password, alarms_key, kept_in = self._credentials(data_dir)
            broker_access = self._broker(data_dir, database_url)
            env = {**os.environ, "IRONSIGHT_DATABASE_URL": database_url, "IRONSIGHT_DATA_DIR": str(data_dir),
                   "IRONSIGHT_API_URL": settings.tickets_api_url(), "IRONSIGHT_API_PORT": str(settings.api_port),
                   "IRONSIGHT_TOPIC_ROOT": settings.topic_root, "IRONSIGHT_ADMIN_PASSWORD": admin_password,
                   "IRONSIGHT_ALARMS_API_KEY": alarms_key,
                   # Vans drive (and engineers collect parts) `speed` times faster: ETAs are computed so too.
                   "IRONSIGHT_DISPATCH_SPEED_KMH": str(settings.dispatch_speed_kmh * self.speed),
                   "IRONSIGHT_DISPATCH_PICKUP_MIN": str(settings.dispatch_pickup_min / self.speed)}
            # Only the processes that talk MQTT get an account, each its own (see the module docstring).
            env.pop("IRONSIGHT_MQTT_URL", None)
            notify_env = self._notification_sinks(data_dir, env)
            self.workers = self.plan(logs)
            # Each service serves its Prometheus metrics on a port of its own (core.metrics.run_ports).
            ports = metrics.run_ports(settings.metrics_port, [w.name for w in self.workers])
            for worker in self.workers:
                kind = worker.name.split("-")[0]
                worker.env = {**broker_access.get(kind, broker_access.get(ALL_WORKERS, {})),
                              **metrics.port_env(ports.get(worker.name)), **(notify_env if kind == "notify" else {})}
                self._start(worker, env)
            if ports:
                self._say(metrics.describe_ports(ports, settings.metrics_host))
            base = f"http://{settings.api_host}:{settings.api_port}"
            self._say(f"API  {base}/api/v1   docs {base}/docs")
            if kept_in is not None:
                self._say(f"login {settings.admin_username} / {admin_password}   (kept in {kept_in}; "
                          f"POST {base}/api/v1/auth/token)")
            else:
                self._say(f"login {settings.admin_username} with the password in IRONSIGHT_ADMIN_PASSWORD   "
                          f"(POST {base}/api/v1/auth/token)")
            self._say(f"logs {logs}   (Ctrl-C stops everything)")
            self._watch(stop, database_url, env)
            return 0
        finally:
            self._shutdown()

    def plan(self, logs: Path) -> list[Worker]:
        """Every process ``ironsight run`` starts: the services of SERVICES, then the simulated world."""
        python = [sys.executable, "-m", "ironsight"]
        settings = self.settings
        parts = self._simulator_processes()
        return [
            Worker("api", [*python, "api", "--port", str(settings.api_port)], logs / "api.log"),
            Worker("ingest", [*python, "ingest"], logs / "ingest.log"),
            Worker("devices", [*python, "devices"], logs / "devices.log"),
            # Each its own process, restarted on its own: the others take over its shards meanwhile.
            *[Worker(f"diagnostics-{i}", [*python, "diagnostics", "--name", f"diagnostics-{i}"],
                     logs / f"diagnostics-{i}.log") for i in range(1, self.diagnostics_workers + 1)],
            Worker("alarms", [*python, "alarms"], logs / "alarms.log"),
            Worker("sla", [*python, "sla"], logs / "sla.log"),
            Worker("tracking", [*python, "tracking"], logs / "tracking.log"),
            Worker("notify", [*python, "notify"], logs / "notify.log"),
            # The diagnostic models learn the fleet's healthy behaviour from the run's own history.
            Worker("train", [*python, "train", "--hours", "6", "--every-min", str(TRAIN_EVERY_MIN)],
                   logs / "train.log"),
            Worker("crew", [*python, "crew", "--speed", str(self.speed),
                            *(arg for flag, rate in self.customer_rates.items() if rate is not None
                              for arg in (flag, str(rate)))], logs / "crew.log"),
            *[Worker(name, [*python, "sim", "--controllers", str(self.controllers),
                            "--fault-share", str(self.fault_share), "--faults", ",".join(self.faults),
                            # Half the faults come late and slowly: the models warn of those first.
                            "--slow-fault-share", "0.5",
                            "--interval", str(self.interval_s),
                            "--full-controllers", str(min(DEMO_FULL_CONTROLLERS, self.controllers)),
                            "--slice", f"{part}/{parts}",
                            # Each controller provisions and connects with its own credential.
                            *(["--provision"] if self.secured_broker else [])],
                     logs / f"{name}.log")
              for part, name in self._simulator_names(parts)],
        ]

    def _simulator_processes(self) -> int:
        """One simulator process carries a few hundred controllers on connections of their own
        (ironsight.commissioning); on shared connections, any number."""
        if not self.secured_broker:
            return 1
        return max(1, -(-self.controllers // SIM_CONTROLLERS_PER_PROCESS))

    @staticmethod
    def _simulator_names(parts: int) -> list[tuple[int, str]]:
        return [(1, "sim")] if parts == 1 else [(part, f"sim-{part}") for part in range(1, parts + 1)]

    @staticmethod
    def _kept_secrets(data_dir: Path) -> tuple[dict[str, str], Path]:
        """KEPT_SECRETS, generated at the first run and kept (readable by the owner only) in the data
        directory, so that a second run over the same history logs in the same way."""
        path = data_dir / "credentials.json"
        kept: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        generated = dict(kept)
        for name in KEPT_SECRETS:
            if not generated.get(name):
                generated[name] = ("isk_" + secrets.token_urlsafe(32) if name == "alarms_api_key"
                                   else secrets.token_urlsafe(12 if name == "admin_password" else 24))
        if generated != kept:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                json.dump(generated, file)
        return generated, path

    def _credentials(self, data_dir: Path) -> tuple[str, str, Path | None]:
        """The bootstrap admin's password and the alarms worker's key: the configured ones, else the
        kept ones. Returns where they are kept, if there."""
        settings = self.settings
        generated, path = self._kept_secrets(data_dir)
        admin = settings.admin_password.get_secret_value() if settings.admin_password else None
        key = settings.alarms_api_key.get_secret_value() if settings.alarms_api_key else None
        return (admin or generated["admin_password"], key or generated["alarms_api_key"],
                None if admin else path)

    def _embedded_database(self, data_dir: Path) -> str:
        self._say(f"starting embedded PostgreSQL in {data_dir / 'postgres'}")
        server = start_embedded_postgres(data_dir)
        self._services.append(server)
        return server.url

    def _broker(self, data_dir: Path, database_url: str) -> dict[str, dict[str, str]]:
        """The configured broker, or an embedded one started now (secured unless told otherwise):
        what each kind of process gets to reach it, worker name → environment (ALL_WORKERS: every one)."""
        settings = self.settings
        if settings.mqtt_url:
            return {ALL_WORKERS: {"IRONSIGHT_MQTT_URL": settings.mqtt_url}}
        if settings.insecure_broker or find_mosquitto() is None:
            broker = start_embedded_broker(data_dir)
            self._services.append(broker)
            self._say(f"started embedded {broker.kind} broker at {broker.url}")
            if settings.insecure_broker:
                self._say(f"WARNING: --insecure-broker: the broker at {broker.url} accepts anonymous clients and "
                          "has no ACL: anyone who can connect to it may publish telemetry, statuses, command "
                          "answers and van positions for any machine or van, and read every topic")
            else:
                self._say(f"WARNING: mosquitto is not installed, so the embedded broker is rumqttd (iotcore), "
                          "which cannot confine a client to its own topics (no ACL): it accepts anonymous "
                          f"clients and is NOT secured. It listens on {broker.host} only (other machines "
                          "cannot reach it; local users can). Install mosquitto for a secured broker.")
            return {ALL_WORKERS: {"IRONSIGHT_MQTT_URL": broker.url}}
        kept, kept_in = self._kept_secrets(data_dir)
        passwords = {user: configured or kept[f"mqtt_{user}_password"] for user, configured in (
            (INGEST_USER, settings.mqtt_ingest_password), (BACKEND_USER, settings.mqtt_backend_password),
            (PROVISIONING_USER, settings.mqtt_provisioning_password), (SIMULATOR_USER, None))}
        root = settings.topic_root
        # The files exist before the broker starts (it refuses to start without them); from then on
        # the devices worker keeps them equal to the registry.
        auth_dir = data_dir / "mosquitto" / "auth"
        write_static_account(auth_dir, SIMULATOR_USER, passwords[SIMULATOR_USER],
                             [f"topic readwrite {repaired_topic(root, '+')}"])
        service = ServicePasswords(passwords[INGEST_USER], passwords[BACKEND_USER], passwords[PROVISIONING_USER])
        with connect(database_url, application_name="ironsight-run") as conn:
            BrokerAuthSync(auth_dir, root, service, pid_file=None).sync(conn)
        broker = start_embedded_broker(data_dir, prefer="mosquitto", auth_dir=auth_dir)
        self._services.append(broker)
        self.secured_broker = True
        self._say(f"started embedded mosquitto broker at {broker.url}, secured: no anonymous client, each account "
                  "confined to its own topics; controllers provision their own credential, vans' trackers get "
                  f"theirs through the API (service accounts' passwords in {kept_in})")
        address = parse_mqtt_url(broker.url)

        def url(user: str) -> str:
            return f"mqtt://{user}:{passwords[user]}@{address.host}:{address.port}"

        return {
            "ingest": {"IRONSIGHT_MQTT_URL": url(INGEST_USER)},
            "devices": {"IRONSIGHT_MQTT_URL": url(BACKEND_USER), "IRONSIGHT_BROKER_AUTH_DIR": str(auth_dir),
                        "IRONSIGHT_BROKER_PID_FILE": str(auth_dir / PID_FILE),
                        "IRONSIGHT_MQTT_INGEST_PASSWORD": passwords[INGEST_USER],
                        "IRONSIGHT_MQTT_BACKEND_PASSWORD": passwords[BACKEND_USER],
                        "IRONSIGHT_MQTT_PROVISIONING_PASSWORD": passwords[PROVISIONING_USER]},
            "tracking": {"IRONSIGHT_MQTT_URL": url(BACKEND_USER)},
            "sim": {"IRONSIGHT_MQTT_URL": url(SIMULATOR_USER),
                    "IRONSIGHT_MQTT_PROVISIONING_PASSWORD": passwords[PROVISIONING_USER]},
            "crew": {"IRONSIGHT_MQTT_URL": url(SIMULATOR_USER)},
        }

    def _notification_sinks(self, data_dir: Path, env: dict[str, str]) -> dict[str, str]:
        """Local receivers for the notification channels not configured (notifications.sinks), so that
        what is sent can be read under <data dir>/outbox/. The integration webhook's URL goes to every
        process (each writes its events' rows); the rest is the notify worker's environment."""
        settings = self.settings
        outbox = data_dir / "outbox"
        notify_env: dict[str, str] = {}
        shown: list[str] = []
        secret = settings.notify_webhook_secret.get_secret_value() if settings.notify_webhook_secret else None
        if not settings.notify_webhook_url or not settings.sms_gateway_url:
            # A fresh secret per run: the sink and the worker are both started here.
            secret = secret or secrets.token_urlsafe(24)
            notify_env["IRONSIGHT_NOTIFY_WEBHOOK_SECRET"] = secret
            http = HttpSink(outbox, secret=secret).start()
            self._services.append(http)
            if not settings.notify_webhook_url:
                env["IRONSIGHT_NOTIFY_WEBHOOK_URL"] = f"{http.url}/webhook"
                shown.append(f"webhooks {outbox / 'webhook'}")
            if not settings.sms_gateway_url:
                notify_env["IRONSIGHT_SMS_GATEWAY_URL"] = f"{http.url}/sms"
                shown.append(f"SMS {outbox / 'sms'}")
        if not settings.smtp_url:
            mail = MailSink(outbox / "mail").start()
            self._services.append(mail)
            notify_env["IRONSIGHT_SMTP_URL"] = mail.url
            shown.append(f"e-mail {outbox / 'mail'}")
        if shown:
            self._say("notifications go to local sinks: " + ", ".join(shown))
        return notify_env

    def _start(self, worker: Worker, env: dict[str, str]) -> None:
        if worker.log_file is None:
            worker.log_file = open(worker.log_path, "ab")  # noqa: SIM115 - closed in _shutdown
        worker.process = subprocess.Popen(
            worker.argv, env={**env, **worker.env}, stdin=subprocess.DEVNULL, stdout=worker.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
        log.info("started %s (pid %d)", worker.name, worker.process.pid)

    def _watch(self, stop: threading.Event, database_url: str, env: dict[str, str]) -> None:
        previous: tuple[float, int] | None = None
        last_alarm_id = 0
        last_ticket_event_id: int | None = None
        conn: psycopg.Connection | None = None
        next_status = time.monotonic() + self.status_every_s
        while not stop.wait(0.5):
            self._restart_dead(env)
            if time.monotonic() < next_status:
                continue
            next_status += self.status_every_s
            try:
                if conn is None or conn.closed:
                    conn = connect(database_url, autocommit=True, application_name="ironsight-status")
                stored = readings_stored_total(conn)
                now = time.monotonic()
                rate = (stored - previous[1]) / (now - previous[0]) if previous else 0.0
                previous = (now, stored)
                online = count_online(conn, offline_after_s=self.settings.offline_after_s)
                tickets = count_by_state(conn)
                open_tickets = sum(n for state, n in tickets.items() if state in OPEN_STATES)
                driving = tickets.get("dispatched", 0) + tickets.get("en_route", 0)
                lag = lag_seconds(conn, "accepted_batches", "diagnostics")
                self._say(f"{datetime.now():%H:%M:%S}  readings/s {rate:8.1f}  diagnosis lag {lag:5.1f} s  "
                          f"online {online:5d}  "
                          f"active alarms {count_active(conn):4d}  open tickets {open_tickets:4d}  "
                          f"(vans out {driving}, on site {tickets.get('on_site', 0)})  "
                          f"closed {tickets.get('closed', 0)}  {describe_calls(conn)}  "
                          f"{describe_aftercare(conn)}")
                last_alarm_id = self._announce_alarms(conn, last_alarm_id)
                if last_ticket_event_id is None:
                    last_ticket_event_id = last_event_id(conn)  # a restart announces only what is new
                last_ticket_event_id = self._announce_ticket_events(conn, last_ticket_event_id)
            except psycopg.Error as exc:
                self._say(f"{datetime.now():%H:%M:%S}  status unavailable: {exc}")
                conn = None
        if conn is not None:
            conn.close()

    def _announce_alarms(self, conn: psycopg.Connection, after_id: int) -> int:
        """One line per new alarm: what, where, and the most probable cause."""
        for alarm in alarms_after(conn, after_id, limit=ANNOUNCE_MAX_ALARMS):
            causes = (alarm["diagnosis"] or {}).get("causes") or []
            top = f" — most probable: {causes[0]['title']} ({causes[0]['probability']:.0%})" if causes else ""
            after = ""
            if alarm.get("fault_stored_at") is not None:
                # From the reading's arrival to the fault is the diagnosis lag on the status line.
                after = f" ({(alarm['created_at'] - alarm['fault_stored_at']).total_seconds():.1f} s after the fault)"
            self._say(f"          alarm {alarm['severity']:>8}  {alarm['fault_code']} on {alarm['equipment_id']}"
                      f"{after}{top}")
            after_id = alarm["id"]
        return after_id

    def _announce_ticket_events(self, conn: psycopg.Connection, after_id: int) -> int:
        """One line per milestone of a work order: dispatched (with ETA), late, arrived, resolved, closed."""
        for event in events_after(conn, after_id, limit=ANNOUNCE_MAX_ALARMS):
            what = describe_ticket_event(event)
            self._say(f"          ticket {event['ticket_id']:>5}  {event['equipment_id']}: {what}")
            after_id = event["id"]
        return after_id

    def _restart_dead(self, env: dict[str, str]) -> None:
        for worker in self.workers:
            if worker.process is None or worker.process.poll() is None:
                continue
            now = time.monotonic()
            if worker.next_start_at == 0.0:
                backoff = min(2.0 ** worker.restarts, RESTART_BACKOFF_MAX_S)
                worker.next_start_at = now + backoff
                self._say(f"{worker.name} exited with code {worker.process.returncode}; restarting in "
                          f"{backoff:.0f}s (log: {worker.log_path})")
            elif now >= worker.next_start_at:
                worker.restarts += 1
                worker.next_start_at = 0.0
                self._start(worker, env)

    def _shutdown(self) -> None:
        # The fleet first so nothing new arrives, the API last so alarms can finish a request.
        order = {"sim": 0, "crew": 0, "ingest": 1, "devices": 2, "diagnostics": 3, "alarms": 4, "sla": 5,
                 "tracking": 5, "notify": 6, "train": 6, "api": 6}
        for worker in sorted(self.workers, key=lambda w: order.get(w.name.split("-")[0], 9)):
            process = worker.process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0fs; killing it", worker.name, STOP_GRACE_S)
                    process.kill()
                    process.wait()
            if worker.log_file is not None:
                worker.log_file.close()
        for service in reversed(self._services):
            service.stop()
        if self.workers or self._services:
            self._say("stopped")

    @staticmethod
    def _say(line: str) -> None:
        print(line, flush=True)


def _clock(at: datetime) -> str:
    local = at.astimezone()
    return f"{local:%H:%M}" if local.date() == datetime.now().date() else f"{local:%d %b %H:%M}"


def describe_calls(conn: psycopg.Connection) -> str:
    """The call centre's last hour: how many calls it took, and what the latest one that ended came to."""
    recent, count = list_calls(conn, customer=None, since=datetime.now(UTC) - timedelta(hours=1),
                               limit=RECENT_CALLS, offset=0)
    last = next((call["outcome"] for call in recent if call["outcome"]), None)
    return f"calls/h {count:3d}" + (f" (last: {last.replace('_', ' ')})" if last else "")


def describe_aftercare(conn: psycopg.Connection) -> str:
    """The callback queue and the complaints, against their deadlines."""
    counts = queue_counts(conn)
    return (f"callbacks open {counts['callbacks_open']} (overdue {counts['callbacks_overdue']}, "
            f"done {counts['callbacks_done']})  complaints open {counts['complaints_open']} "
            f"(overdue {counts['complaints_overdue']}, closed {counts['complaints_closed']})")


def describe_ticket_event(event: dict) -> str:
    detail = event["detail"] or {}
    kind = event["event"]
    if kind == "dispatched":
        warehouse = (detail.get("plan") or {}).get("warehouse_id")
        return (f"dispatched to {detail.get('engineer')}" + (f" via {warehouse}" if warehouse else "")
                + (f", ETA {_clock(event['eta'])}" if event["eta"] else ""))
    if kind == "late_arrival_warning":
        return f"running late by {detail.get('late_by_min')} min"
    if kind == "arrived":
        return f"{event['engineer']} on site"
    if kind == "resolved":
        return "resolved " + ("remotely" if detail.get("action") == "resolve_remote" else "on site")
    if kind == "complaint_opened":
        about = ", ".join(detail.get("low", [])) or detail.get("description") or "the service"
        return f"complaint about {about} sent to {detail.get('department')}"
    if kind == "complaint_answered":
        return f"{detail.get('department')} answered the complaint (round {detail.get('round')}); checking callback due"
    if kind == "complaint_sent_back":
        return f"still unhappy: complaint sent back to {detail.get('department')} (round {detail.get('round')})"
    if kind == "complaint_satisfied":
        return "checking callback: the customer is satisfied"
    if kind == "complaint_escalated":
        return f"complaint escalated to management ({detail.get('reason')})"
    return {"closed": "closed after the callback", "second_callback": "closed after the checking callback",
            "closed_by_management": "closed by management", "closed_unreachable": "closed: customer unreachable"
            }.get(kind, kind)
