"""A fleet of simulated controllers publishing telemetry v1 over MQTT (QoS 1).

Controllers share a few MQTT connections (each connection carries many equipment topics) so that
one process can drive thousands, on a broker that lets one account publish for every machine.
Given each controller's own credential, the fleet instead opens a connection per controller, as a
broker with per-device ACL (IronSight's secured Mosquitto) requires: one ``core.mqtt.Session``
each, while one thread still advances every machine. A controller that starts with ``backfill_s``
first uploads that much history in store-and-forward messages, as a real one does after a GPRS
outage.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from core import mqtt, topics
from core.inbound import InboundMessage
from core.telemetry import Reading, encode_message
from device_sim.faults import COOLING_FAULTS, INJECTABLE_FAULTS
from device_sim.machine import MachineSpec, SimulatedMachine

log = logging.getLogger(__name__)

CONTROLLERS_PER_CONNECTION = 250
# Store-and-forward uploads are split into messages of this many readings.
BACKLOG_READINGS_PER_MESSAGE = 100
MAX_INFLIGHT_PER_CONNECTION = 1000
# With a connection per controller: how long to wait for them all before reporting starts (those
# not connected by then report once they are).
OWN_CONNECTIONS_WAIT_S = 30.0

SITE_RADIUS_M = 1000.0


def repaired_topic(root: str, equipment_id: str) -> str:
    """Inside the simulation only: the simulated crew tells the simulated fleet a machine was fixed."""
    return f"{root}/sim/{equipment_id}/repaired"


@dataclass(frozen=True, slots=True)
class Site:
    """A job site: centre, annual mean air temperature (its climate: device_sim.climate), geofence
    radius around the centre, local time zone, country."""

    name: str
    lat: float
    lon: float
    annual_mean_c: float
    radius_m: float
    timezone: str  # IANA name
    country: str  # ISO 3166 code


# Job sites the fleet works at. Healthy machines stay within 700 m of the centre, inside the fence.
SITES: tuple[Site, ...] = (
    Site("rotterdam-port", 51.9490, 4.1420, 11.0, SITE_RADIUS_M, "Europe/Amsterdam", "NL"),
    Site("munich-ring", 48.1372, 11.5755, 9.0, SITE_RADIUS_M, "Europe/Berlin", "DE"),
    Site("lyon-tunnel", 45.7640, 4.8357, 13.0, SITE_RADIUS_M, "Europe/Paris", "FR"),
    Site("milan-tower", 45.4642, 9.1900, 14.0, SITE_RADIUS_M, "Europe/Rome", "IT"),
    Site("warsaw-bridge", 52.2297, 21.0122, 8.0, SITE_RADIUS_M, "Europe/Warsaw", "PL"),
    Site("madrid-metro", 40.4168, -3.7038, 17.0, SITE_RADIUS_M, "Europe/Madrid", "ES"),
)
SITES_BY_NAME: dict[str, Site] = {site.name: site for site in SITES}

# (model, kind): what the fleet is made of.
MODELS = (("EX210", "excavator"), ("EX350", "excavator"), ("TC500", "crane"), ("CP42", "concrete_pump"))
CUSTOMERS = ("acme-construction", "nordbau", "sud-travaux", "delta-infra")


# Slowly developing faults: begun after the first models are trained (about 15 minutes of history),
# fully developed three quarters of an hour later.
SLOW_FAULT_AFTER_S = (1500.0, 3000.0)
SLOW_FAULT_RAMP_S = 2700.0


def build_fleet(count: int, *, fault_share: float, seed: int = 1, id_prefix: str = "EQ",
                fault_after_s: tuple[float, float] = (20.0, 60.0),
                faults: tuple[str, ...] = COOLING_FAULTS, slow_share: float = 0.0) -> list[MachineSpec]:
    """``count`` machines; round(count × fault_share) of them develop a fault.

    The faulty machines (chosen at random with ``seed``), in equipment id order, get the kinds of
    ``faults`` in turn, each beginning a uniform ``fault_after_s`` seconds after the machine starts.
    The default faults all overheat the oil, so that a demo fleet shows overheating machines.
    ``slow_share`` of the faulty machines instead begin ``SLOW_FAULT_AFTER_S`` into the run and take
    ``SLOW_FAULT_RAMP_S`` to develop: by then the diagnostic models have learned the fleet, and they
    see those faults coming before the limits are crossed.
    """
    unknown = [kind for kind in faults if kind not in INJECTABLE_FAULTS]
    if unknown or not faults:
        raise ValueError(f"faults must be kinds from {', '.join(INJECTABLE_FAULTS)}; got {faults!r}")
    rng = random.Random(seed)
    faulty = set(rng.sample(range(count), round(count * fault_share))) if count else set()
    fleet = []
    faults_given = 0
    for index in range(count):
        site = SITES[index % len(SITES)]
        model, kind = MODELS[index % len(MODELS)]
        fault = None
        if index in faulty:
            fault = faults[faults_given % len(faults)]
            faults_given += 1
        fleet.append(MachineSpec(
            equipment_id=f"{id_prefix}-{index + 1:05d}",
            serial=f"{model}-{seed:02d}{index + 1:07d}",
            model=model,
            kind=kind,
            customer=CUSTOMERS[index % len(CUSTOMERS)],
            site=site.name,
            site_lat=site.lat,
            site_lon=site.lon,
            site_timezone=site.timezone,
            site_annual_mean_c=site.annual_mean_c,
            fault=fault,
            fault_after_s=rng.uniform(*fault_after_s) if fault else None,
        ))
        if fault and slow_share > 0 and rng.random() < slow_share:
            fleet[-1] = replace(fleet[-1], fault_after_s=rng.uniform(*SLOW_FAULT_AFTER_S),
                                fault_ramp_s=SLOW_FAULT_RAMP_S)
    return fleet


@dataclass(slots=True)
class FleetStats:
    published: int = 0
    acked: int = 0
    readings: int = 0


class _Connection:
    """One MQTT connection carrying the topics of many controllers."""

    def __init__(self, name: str, address: mqtt.BrokerAddress, stats: FleetStats, lock: threading.Lock,
                 subscriptions: list[str] | None = None, on_message: mqtt.MessageHandler | None = None) -> None:
        self._stats = stats
        self._lock = lock
        self.session = mqtt.Session(address, name, name=f"simulated fleet {name}", subscriptions=subscriptions or [],
                                    on_message=on_message, on_published=self._on_published,
                                    max_inflight=MAX_INFLIGHT_PER_CONNECTION).start()
        self.connected = self.session.ready

    def _on_published(self, mid: int, failed: bool) -> None:
        with self._lock:
            self._stats.acked += 1

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.session.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.PUBLISH_QUEUED, mqtt.PUBLISH_NOT_CONNECTED):
            log.warning("publish on %s failed: %s", topic, mqtt.error_text(info.rc))


class FleetRunner:
    """``credentials`` (equipment id → (username, password)): each controller connects on a
    connection of its own with its own credential, client id ``client_id_prefix`` + equipment id,
    and a machine without a credential is left silent; ``mqtt_url``'s account then only hears which
    machines were repaired. Without: controllers share connections on ``mqtt_url``'s account."""

    def __init__(self, specs: list[MachineSpec], mqtt_url: str, *, topic_root: str, interval_s: float = 1.0,
                 readings_per_message: int = 1, backfill_s: float = 0.0, seed: int = 1,
                 credentials: Mapping[str, tuple[str, str]] | None = None,
                 client_id_prefix: str | None = None, name: str | None = None) -> None:
        self.specs = specs
        self.address = mqtt.parse_mqtt_url(mqtt_url)
        self.credentials = credentials
        self.client_id_prefix = client_id_prefix if client_id_prefix is not None else f"{topic_root}-ctl-"
        # The client id of its shared (or notices) connections: two fleets on one broker need their own.
        self.name = name or f"{topic_root}-sim-{seed}"
        self.topic_root = topic_root
        self.interval_s = interval_s
        self.readings_per_message = readings_per_message
        self.backfill_s = backfill_s
        self.seed = seed
        self.stats = FleetStats()
        self._lock = threading.Lock()
        self._repaired: set[str] = set()

    def _on_repaired(self, message: InboundMessage) -> None:
        with self._lock:
            self._repaired.add(message.topic.split("/")[-2])

    def run(self, stop: threading.Event) -> None:
        connections, owners = self._connect()
        try:
            if self.credentials is None:
                for connection in connections:
                    while not connection.connected.wait(0.5):
                        if stop.is_set():
                            return
            elif not self._wait_for_own_connections(connections, stop):
                return
            self._run_connected(owners, stop)
        finally:
            for connection in connections:
                connection.session.stop()

    def _connect(self) -> tuple[list[_Connection], list[_Connection | None]]:
        """The connections, and each machine's (None: it has no credential and stays silent)."""
        repaired = [repaired_topic(self.topic_root, "+")]
        if self.credentials is None:
            # The first connection also hears which machines were repaired.
            shared = [
                _Connection(f"{self.name}-{i}", self.address, self.stats, self._lock,
                            subscriptions=repaired if i == 0 else None,
                            on_message=self._on_repaired if i == 0 else None)
                for i in range(max(1, math.ceil(len(self.specs) / CONTROLLERS_PER_CONNECTION)))
            ]
            return shared, [shared[i // CONTROLLERS_PER_CONNECTION] for i in range(len(self.specs))]
        notices = _Connection(f"{self.name}-notices", self.address, self.stats, self._lock,
                              subscriptions=repaired, on_message=self._on_repaired)
        connections = [notices]
        owners: list[_Connection | None] = []
        for spec in self.specs:
            credential = self.credentials.get(spec.equipment_id)
            if credential is None:
                owners.append(None)
                continue
            own = _Connection(self.client_id_prefix + spec.equipment_id, self.address.with_credentials(*credential),
                              self.stats, self._lock)
            connections.append(own)
            owners.append(own)
        silent = owners.count(None)
        if silent:
            log.warning("%d simulated machines have no credential and stay silent", silent)
        return connections, owners

    def _wait_for_own_connections(self, connections: list[_Connection], stop: threading.Event) -> bool:
        deadline = time.monotonic() + OWN_CONNECTIONS_WAIT_S
        while not all(c.connected.is_set() or c.session.refused.is_set() for c in connections):
            if stop.wait(0.2):
                return False
            if time.monotonic() > deadline:
                break
        waiting = sum(not c.connected.is_set() for c in connections)
        if waiting:
            log.warning("%d of %d connections are not up yet (refused or still connecting); their machines "
                        "report once they are", waiting, len(connections))
        return True

    def _run_connected(self, owners: list[_Connection | None], stop: threading.Event) -> None:
        now = datetime.now(UTC)
        start = now - timedelta(seconds=self.backfill_s)
        machines = [SimulatedMachine(spec, start, seed=self.seed * 1_000_003 + i) for i, spec in enumerate(self.specs)]
        topics_by_machine = [topics.telemetry_topic(self.topic_root, s.equipment_id) for s in self.specs]
        seqs = [0] * len(machines)
        pending: list[list[Reading]] = [[] for _ in machines]

        own = self.credentials is not None

        def send(i: int, readings: list[Reading]) -> None:
            connection = owners[i]
            if connection is None or (own and not connection.connected.is_set()):
                # A controller of its own that is not connected (yet, or refused) loses the message
                # rather than piling it up in its session for a connection that may never come.
                return
            seqs[i] += 1
            connection.publish(topics_by_machine[i], encode_message(seqs[i], readings))
            with self._lock:
                self.stats.published += 1
                self.stats.readings += len(readings)

        if self.backfill_s > 0:
            steps = int(self.backfill_s / self.interval_s)
            for i, machine in enumerate(machines):
                backlog = []
                for step in range(steps):
                    machine.advance(self.interval_s)
                    backlog.append(machine.reading(start + timedelta(seconds=(step + 1) * self.interval_s)))
                for first in range(0, len(backlog), BACKLOG_READINGS_PER_MESSAGE):
                    send(i, backlog[first:first + BACKLOG_READINGS_PER_MESSAGE])
                if stop.is_set():
                    return
            log.info("fleet uploaded %d s of backlog for %d controllers", self.backfill_s, len(machines))

        next_tick = time.monotonic()
        last_ts = datetime.now(UTC)
        index = {spec.equipment_id: i for i, spec in enumerate(self.specs)}
        while not stop.is_set():
            with self._lock:
                repaired, self._repaired = self._repaired, set()
            for equipment_id in repaired:
                if equipment_id in index:
                    machines[index[equipment_id]].repair()
                    log.info("simulated machine %s repaired", equipment_id)
            next_tick += self.interval_s
            ts = datetime.now(UTC)
            dt_s = max(0.0, (ts - last_ts).total_seconds())
            last_ts = ts
            for i, machine in enumerate(machines):
                machine.advance(dt_s)
                pending[i].append(machine.reading(ts))
                if len(pending[i]) >= self.readings_per_message:
                    send(i, pending[i])
                    pending[i] = []
            delay = next_tick - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_tick = time.monotonic()  # behind schedule: do not try to catch up in a burst
