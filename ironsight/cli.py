"""The ``ironsight`` command: ``run`` starts everything; the other subcommands are its processes."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from core import metrics
from core.settings import Settings
from device_sim.faults import COOLING_FAULTS, INJECTABLE_FAULTS

# The demo fleet shows every kind of fault, the cooling faults first.
DEMO_FAULTS = COOLING_FAULTS + tuple(k for k in INJECTABLE_FAULTS if k not in COOLING_FAULTS)
# The demo's customers call about once a minute, and raise a request in the portal every ten minutes.
CALLS_PER_HOUR = 60.0
PORTAL_REQUESTS_PER_HOUR = 6.0

log = logging.getLogger("ironsight")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _require(value: str | None, variable: str) -> str:
    if not value:
        raise SystemExit(f"{variable} is not set (or start everything with `ironsight run`)")
    return value


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from ironsight.supervisor import Supervisor

    if args.api_port:
        settings.api_port = args.api_port
    if args.insecure_broker:
        settings.insecure_broker = True
    supervisor = Supervisor(settings, controllers=args.controllers, fault_share=args.fault_share,
                            faults=_fault_kinds(args.faults), interval_s=args.interval,
                            status_every_s=args.status_every, speed=args.speed,
                            diagnostics_workers=args.diagnostics_workers, calls_per_hour=args.calls_per_hour,
                            portal_requests_per_hour=args.portal_requests_per_hour)
    return supervisor.run(_stop_on_signals())


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from ironsight.schema import migrate

    applied = migrate(_require(settings.database_url, "IRONSIGHT_DATABASE_URL"))
    print(f"applied {len(applied)} migrations" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.worker import IngestWorker

    database_url = _require(settings.database_url, "IRONSIGHT_DATABASE_URL")
    mqtt_url = _require(settings.mqtt_url, "IRONSIGHT_MQTT_URL")
    if args.workers > 1:
        return _run_processes("ingest", args.workers, args.name)
    IngestWorker(settings, database_url, mqtt_url, name=args.name).run(_stop_on_signals())
    return 0


def _run_processes(command: str, workers: int, name: str) -> int:
    """N worker processes of one kind (each its own GIL and connections), sharing the work: ingest
    through the broker's shared subscription, diagnostics and alarms through shard leases. One that
    dies is started again; the others carry its share meanwhile."""
    import subprocess

    from ironsight.processes import die_with_parent

    def start(i: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "ironsight", command, "--name", f"{name}-{i + 1}"],
                                env=metrics.numbered_env(i),  # its own metrics port: base + i
                                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)

    stop = _stop_on_signals()
    processes = [start(i) for i in range(workers)]
    while not stop.wait(1.0):
        for i, process in enumerate(processes):
            if process.poll() is not None:
                log.error("%s worker %d exited with %s; starting it again", command, process.pid,
                          process.returncode)
                processes[i] = start(i)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait()
    return 0


def cmd_devices(args: argparse.Namespace, settings: Settings) -> int:
    from devices.worker import DevicesWorker

    DevicesWorker(settings, _require(settings.database_url, "IRONSIGHT_DATABASE_URL"),
                  _require(settings.mqtt_url, "IRONSIGHT_MQTT_URL")).run(_stop_on_signals())
    return 0


def cmd_diagnostics(args: argparse.Namespace, settings: Settings) -> int:
    from diagnostics.worker import DiagnosticsWorker

    database_url = _require(settings.database_url, "IRONSIGHT_DATABASE_URL")
    if args.workers > 1:
        return _run_processes("diagnostics", args.workers, args.name)
    DiagnosticsWorker(database_url, name=args.name).run(_stop_on_signals())
    return 0


def cmd_alarms(args: argparse.Namespace, settings: Settings) -> int:
    from alarms.worker import AlarmsWorker

    database_url = _require(settings.database_url, "IRONSIGHT_DATABASE_URL")
    if args.workers > 1:
        return _run_processes("alarms", args.workers, args.name)
    AlarmsWorker(database_url, settings.tickets_api_url()).run(_stop_on_signals())
    return 0


def cmd_sla(args: argparse.Namespace, settings: Settings) -> int:
    from tickets.sla import SlaWorker

    SlaWorker(_require(settings.database_url, "IRONSIGHT_DATABASE_URL"), check_every_s=settings.sla_check_every_s,
              warn_fraction=settings.sla_warn_fraction).run(_stop_on_signals())
    return 0


def cmd_notify(args: argparse.Namespace, settings: Settings) -> int:
    from notifications.channels import DeliveryConfig
    from notifications.worker import NotifyWorker

    NotifyWorker(_require(settings.database_url, "IRONSIGHT_DATABASE_URL"), DeliveryConfig.from_settings(settings),
                 name=args.name).run(_stop_on_signals())
    return 0


def cmd_tracking(args: argparse.Namespace, settings: Settings) -> int:
    from tickets.dispatch import TravelModel
    from tickets.tracking import TrackingWorker

    TrackingWorker(_require(settings.database_url, "IRONSIGHT_DATABASE_URL"),
                   _require(settings.mqtt_url, "IRONSIGHT_MQTT_URL"), topic_root=settings.topic_root,
                   travel=TravelModel.from_settings(settings), arrival_radius_m=settings.arrival_radius_m,
                   future_tolerance_s=settings.future_tolerance_s).run(_stop_on_signals())
    return 0


def cmd_crew(args: argparse.Namespace, settings: Settings) -> int:
    from device_sim.crew import ServiceCrew
    from device_sim.customers import SimulatedCustomers

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the crew's log
    if settings.admin_password is None:
        raise SystemExit("the crew signs in with the admin account: set IRONSIGHT_ADMIN_PASSWORD")
    customers = None
    if args.calls_per_hour > 0 or args.portal_requests_per_hour > 0:
        customers = SimulatedCustomers(settings.tickets_api_url(), calls_per_hour=args.calls_per_hour,
                                       requests_per_hour=args.portal_requests_per_hour,
                                       phone_region=settings.phone_region, seed=args.seed)
    ServiceCrew(settings.tickets_api_url(), _require(settings.mqtt_url, "IRONSIGHT_MQTT_URL"),
                topic_root=settings.topic_root, username=settings.admin_username,
                password=settings.admin_password.get_secret_value(), speed=args.speed, seed=args.seed,
                road_speed_kmh=settings.dispatch_speed_kmh / args.speed,
                road_factor=settings.dispatch_road_factor, customers=customers).run(_stop_on_signals())
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime, timedelta

    import psycopg

    from core.db import connect
    from diagnostics.training import train

    database_url = _require(settings.database_url, "IRONSIGHT_DATABASE_URL")
    stop = _stop_on_signals() if args.every_min else None
    while True:
        until = datetime.now(UTC)
        since = until - timedelta(hours=args.hours)
        try:
            with connect(database_url, application_name="ironsight-train") as conn:
                trained = train(conn, since=since, until=until, equipment_model=args.equipment_model)
        except psycopg.OperationalError as exc:
            if stop is None:
                raise
            print(f"database unavailable ({exc}); trying again next round", flush=True)
            trained = []
        for model in trained:
            scope = model.equipment_id or f"all {model.equipment_model}"
            print(f"{model.kind:10} {scope:24} {model.samples:8d} samples  residual spread "
                  f"{model.residual_spread:.2f} °C", flush=True)
        print(f"trained {len(trained)} models on {since:%Y-%m-%d %H:%M} … {until:%H:%M} UTC", flush=True)
        # Refitted on a schedule, each model a new version (the previous ones stay, inactive).
        if stop is None or stop.wait(args.every_min * 60):
            return 0


def cmd_diagnose_csv(args: argparse.Namespace, settings: Settings) -> int:
    from diagnostics.offline.csv_report import write_diagnosis_csv

    try:
        write_diagnosis_csv(args.path, sys.stdout, train_rows=args.train_rows, time_column=args.time_column,
                            sep=args.sep, contributors=args.contributors)
    except (OSError, ValueError) as exc:
        print(f"ironsight diagnose-csv: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app

    port = args.port or settings.api_port
    app = create_app(settings, _require(settings.database_url, "IRONSIGHT_DATABASE_URL"))
    # Forwarded headers are believed only from IRONSIGHT_TRUSTED_PROXIES, by the app (api.limits).
    uvicorn.run(app, host=settings.api_host, port=port, log_level="warning", proxy_headers=False)
    return 0


def cmd_sim(args: argparse.Namespace, settings: Settings) -> int:
    from core.db import connect
    from device_sim.controller import SimulatedController
    from device_sim.simulated_fleet import FleetRunner, build_fleet
    from ironsight.commissioning import CREDENTIALS_DIR, commission
    from ironsight.schema import register_fleet

    fleet = build_fleet(args.controllers, fault_share=args.fault_share, seed=args.seed,
                        faults=_fault_kinds(args.faults), slow_share=args.slow_fault_share)
    part, parts = _slice(args.slice)
    # This process's share of the fleet: the same machines whichever process runs them.
    size = -(-len(fleet) // parts)
    first = (part - 1) * size
    specs = fleet[first:first + size]
    mqtt_url = _require(settings.mqtt_url, "IRONSIGHT_MQTT_URL")
    stop = _stop_on_signals()
    if args.provision and not settings.database_url:
        raise SystemExit("--provision registers the controllers in the device registry: set IRONSIGHT_DATABASE_URL")
    credentials: dict[str, tuple[str, str]] | None = None
    if settings.database_url:
        # The register is the source of truth for which equipment may report; the simulated
        # fleet registers itself the way a commissioning engineer would.
        with connect(settings.database_url, application_name="ironsight-sim") as conn:
            register_fleet(conn, specs)
            if args.provision:
                credentials = commission(
                    conn, specs, mqtt_url=mqtt_url, topic_root=settings.topic_root,
                    provisioning_password=_require(settings.mqtt_provisioning_password,
                                                   "IRONSIGHT_MQTT_PROVISIONING_PASSWORD"),
                    store_dir=settings.data_dir / CREDENTIALS_DIR, stop=stop)
    if stop.is_set():
        return 0
    # The fleet's first machines run the whole device protocol, each on a connection of its own (last
    # will, remote commands); the rest only report telemetry, sharing connections, or each on a
    # connection of its own with its own credential once provisioned.
    # Client ids carry the topic root: two deployments on one broker must not take each other's sessions.
    full_count = max(0, min(args.full_controllers, len(fleet)) - first)
    full: list[SimulatedController] = []
    for i, spec in enumerate(specs[:full_count], start=first):
        credential = credentials.get(spec.equipment_id) if credentials is not None else None
        if credentials is not None and credential is None:
            continue  # no credential of its own: silent
        username, password = credential or (None, None)
        full.append(SimulatedController(spec, mqtt_url, topic_root=settings.topic_root, interval_s=args.interval,
                                        username=username, password=password, seed=args.seed * 7919 + i,
                                        client_id=f"{settings.topic_root}-ctl-{spec.equipment_id}").start())
    runner = FleetRunner(specs[full_count:], mqtt_url, topic_root=settings.topic_root,
                         interval_s=args.interval, readings_per_message=args.readings_per_message,
                         backfill_s=args.backfill, seed=args.seed, credentials=credentials,
                         client_id_prefix=f"{settings.topic_root}-ctl-",
                         name=f"{settings.topic_root}-sim-{args.seed}" + (f"-{part}of{parts}" if parts > 1 else ""))
    try:
        runner.run(stop)
    finally:
        for controller in full:
            controller.stop()
    return 0


def _slice(text: str) -> tuple[int, int]:
    """``--slice K/N``: the K-th of N equal parts of the fleet (1-based)."""
    try:
        part, parts = (int(n) for n in text.split("/"))
    except ValueError:
        raise SystemExit(f"--slice wants K/N, e.g. 2/4, not {text!r}") from None
    if not 1 <= part <= parts:
        raise SystemExit(f"--slice {text}: K must be 1 to N")
    return part, parts


def _fault_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in INJECTABLE_FAULTS]
    if unknown or not kinds:
        raise SystemExit(f"unknown faults {unknown}; choose from {', '.join(INJECTABLE_FAULTS)}")
    return kinds


def _add_customer_rates(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """The simulated customers' rates; ``run`` passes them on to the crew only when given."""
    parser.add_argument("--calls-per-hour", type=float, default=CALLS_PER_HOUR if default else None,
                        help="simulated customers' calls to the call centre, on average (default "
                             f"{CALLS_PER_HOUR:g}; 0: none); real time, whatever --speed")
    parser.add_argument("--portal-requests-per-hour", type=float,
                        default=PORTAL_REQUESTS_PER_HOUR if default else None,
                        help="simulated customers' requests through the portal, on average (default "
                             f"{PORTAL_REQUESTS_PER_HOUR:g}; 0: none)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ironsight", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the database, broker, workers, API and a simulated fleet")
    run.add_argument("--controllers", type=int, default=200, help="simulated controllers (default 200)")
    run.add_argument("--fault-share", type=float, default=0.05,
                     help="share of controllers that develop a fault (default 0.05)")
    run.add_argument("--faults", default=",".join(DEMO_FAULTS),
                     help=f"faults to inject, comma-separated, from: {', '.join(INJECTABLE_FAULTS)}")
    run.add_argument("--api-port", type=int, default=None, help="API port (default 8000)")
    run.add_argument("--interval", type=float, default=1.0, help="seconds between readings (default 1)")
    run.add_argument("--status-every", type=float, default=5.0, help="seconds between status lines")
    run.add_argument("--diagnostics-workers", type=int, default=None,
                     help="diagnostics processes (default: one per core to spare, at least one)")
    run.add_argument("--speed", type=float, default=1.0,
                     help="the service crew acts and its vans drive this many times faster than real time "
                          "(default 1); telemetry and SLA clocks stay real")
    _add_customer_rates(run, default=False)
    run.add_argument("--insecure-broker", action="store_true",
                     help="let the embedded broker accept anonymous clients (no passwords, no ACL): anyone "
                          "who reaches it can publish and read every topic. Default: secured (Mosquitto)")
    run.set_defaults(handler=cmd_run)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(handler=cmd_migrate)

    ingest = sub.add_parser("ingest", help="run one ingest worker")
    ingest.add_argument("--name", default="ingest-1", help="worker name (MQTT client id suffix)")
    ingest.add_argument("--workers", type=int, default=1, help="worker processes sharing the subscription")
    ingest.set_defaults(handler=cmd_ingest)

    sub.add_parser("devices", help="run the devices worker (presence, remote commands, provisioning, broker "
                                   "credentials)").set_defaults(handler=cmd_devices)
    diagnostics = sub.add_parser("diagnostics", help="run diagnostics workers (they share the fleet's shards)")
    diagnostics.add_argument("--name", default="diagnostics", help="worker name (in logs and checkpoints)")
    diagnostics.add_argument("--workers", type=int, default=1, help="worker processes")
    diagnostics.set_defaults(handler=cmd_diagnostics)

    train = sub.add_parser("train", help="train the diagnostic models on healthy history in the database")
    train.add_argument("--hours", type=float, default=24.0, help="history to learn from (default 24)")
    train.add_argument("--equipment-model", default=None, help="only this equipment model")
    train.add_argument("--every-min", type=float, default=0.0,
                       help="train again every so many minutes until stopped (default: once)")
    train.set_defaults(handler=cmd_train)
    alarms = sub.add_parser("alarms", help="run alarms workers (they share the fleet's shards)")
    alarms.add_argument("--name", default="alarms", help="worker name")
    alarms.add_argument("--workers", type=int, default=1, help="worker processes")
    alarms.set_defaults(handler=cmd_alarms)
    sub.add_parser("tracking", help="run the vehicle tracking worker (positions → ETA, late warnings, arrivals)"
                   ).set_defaults(handler=cmd_tracking)
    notify = sub.add_parser("notify", help="run a notify worker (delivers notifications by e-mail, SMS gateway "
                                           "and webhook; any number may run)")
    notify.add_argument("--name", default="notify", help="worker name (in logs and the attempts table)")
    notify.set_defaults(handler=cmd_notify)
    crew = sub.add_parser("crew", help="run a simulated service crew (dispatcher, engineers and vans, call centre)")
    crew.add_argument("--speed", type=float, default=1.0,
                      help="people act and vans drive this many times faster (default 1); give the tracking worker "
                           "IRONSIGHT_DISPATCH_SPEED_KMH scaled the same way")
    crew.add_argument("--seed", type=int, default=1)
    _add_customer_rates(crew, default=True)
    crew.set_defaults(handler=cmd_crew)
    sub.add_parser("sla", help="run the SLA scheduler (time-limit warnings and breaches)").set_defaults(
        handler=cmd_sla)

    offline = sub.add_parser("diagnose-csv", help="score a recorded series (CSV) with the multivariate detector")
    offline.add_argument("path", help="CSV file: a header row, then one or more numeric columns")
    offline.add_argument("--train-rows", type=int, required=True, help="leading rows taken as healthy")
    offline.add_argument("--time-column", default=None, help="a column copied to the output as the time")
    offline.add_argument("--sep", default=",", help="field separator (default ,)")
    offline.add_argument("--contributors", action="store_true", help="add the signals behind each anomaly")
    offline.set_defaults(handler=cmd_diagnose_csv)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--port", type=int, default=None)
    api.set_defaults(handler=cmd_api)

    sim = sub.add_parser("sim", help="run a simulated fleet")
    sim.add_argument("--controllers", type=int, default=200)
    sim.add_argument("--fault-share", type=float, default=0.05)
    sim.add_argument("--slow-fault-share", type=float, default=0.0,
                     help="share of the faulty machines whose fault begins after 25-50 min and develops slowly")
    sim.add_argument("--faults", default=",".join(DEMO_FAULTS))
    sim.add_argument("--interval", type=float, default=1.0)
    sim.add_argument("--readings-per-message", type=int, default=1)
    sim.add_argument("--backfill", type=float, default=0.0, help="seconds of history to upload first")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--full-controllers", type=int, default=0,
                     help="how many of the machines (the first ones) run the whole device protocol: status with "
                          "last will, remote commands")
    sim.add_argument("--slice", default="1/1",
                     help="K/N: run only the K-th of N equal parts of the fleet (several processes share a fleet)")
    sim.add_argument("--provision", action="store_true",
                     help="register each controller in the device registry and let it provision with "
                          "IRONSIGHT_MQTT_PROVISIONING_PASSWORD; each then connects with its own credential "
                          "(kept in <data dir>/sim/credentials/), as a broker with per-device ACL requires")
    sim.set_defaults(handler=cmd_sim)

    from dashboards.cli import add_parser as add_dashboards_parser

    add_dashboards_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    _configure_logging(settings)
    metrics.start_exporter_for(args.command, port=settings.metrics_port, host=settings.metrics_host,
                               name=getattr(args, "name", None), workers=getattr(args, "workers", 1))
    return args.handler(args, settings)
