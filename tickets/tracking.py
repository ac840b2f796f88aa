"""Vehicle tracking: positions over MQTT move the vehicles, update the ETA of their visit, warn when
the promised arrival can no longer be kept, note the part collected, and record the arrival.

For each position (newest per vehicle wins; older ones only go to the history), every ticket the
vehicle is on (``dispatched`` or ``en_route``):

- the warehouse stop counts as done once the vehicle comes within ``arrival_radius_m`` of it
  (``part_collected`` event);
- the ETA is the position's time + the travel time of the rest of the route (through the warehouse
  while the part is still to be collected) by the dispatch travel model;
- the first time the ETA passes ``arrive_by`` a ``late_arrival_warning`` event is written, once;
- an ``en_route`` vehicle within ``arrival_radius_m`` of the machine (part collected) arrives: the
  ticket's ``arrive`` action is taken with the position's time, by ``tracking:<vehicle>``.

Positions reach the worker through its MQTT session's bounded inbox (core.mqtt.Session); when it
is full a position is dropped, counted and logged rather than blocking the network loop: the
vehicle's next position supersedes it. Bad positions are counted per reason and logged.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from core import metrics, mqtt
from core.db import connect
from core.errors import InvalidTelemetry
from core.geo import distance_km
from core.inbound import BadInputLog, InboundMessage
from core.positions import Position, decode_position, position_subscription, vehicle_id_from_topic
from notifications import notify
from tickets import dispatch, service
from tickets.dispatch import TravelModel
from tickets.workflow import TransitionError

log = logging.getLogger(__name__)

INBOX_MAX_POSITIONS = 10_000
BATCH_MAX = 500
TRACKING_CLIENT_ID = "ironsight-tracking"
SESSION_EXPIRY_S = 3600


@dataclass
class TrackingStats:
    positions: int = 0
    rejected: int = 0
    unknown_vehicle: int = 0
    arrivals: int = 0
    late_warnings: int = 0


def track_position(conn: psycopg.Connection, vehicle_id: str, position: Position, travel: TravelModel,
                   arrival_radius_m: float, stats: TrackingStats | None = None) -> bool:
    """Apply one position; False when the vehicle is unknown."""
    stats = stats or TrackingStats()
    arrivals: list[int] = []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        known = cur.execute("SELECT reported_at FROM vehicles WHERE id = %s FOR UPDATE", (vehicle_id,)).fetchone()
        if known is None:
            stats.unknown_vehicle += 1
            return False
        cur.execute("""INSERT INTO vehicle_positions (vehicle_id, at, lat, lon, speed_kmh) VALUES (%s, %s, %s, %s, %s)
                       ON CONFLICT DO NOTHING""", (vehicle_id, position.ts, position.lat, position.lon,
                                                   position.speed_kmh))
        if known["reported_at"] is not None and known["reported_at"] >= position.ts:
            return True  # a late position: history only
        cur.execute("UPDATE vehicles SET lat = %s, lon = %s, speed_kmh = %s, reported_at = %s WHERE id = %s",
                    (position.lat, position.lon, position.speed_kmh, position.ts, vehicle_id))
        tickets = cur.execute(
            """SELECT t.id, t.state, t.arrive_by, t.late_warned_at, t.pickup_warehouse_id, t.part_picked_up_at,
                      t.required_part, w.lat AS w_lat, w.lon AS w_lon
               FROM tickets t LEFT JOIN warehouses w ON w.id = t.pickup_warehouse_id
               WHERE t.vehicle_id = %s AND t.state IN ('dispatched', 'en_route') FOR UPDATE OF t""",
            (vehicle_id,),
        ).fetchall()
        for ticket in tickets:
            if _update_visit(cur, ticket, vehicle_id, position, travel, arrival_radius_m, stats):
                arrivals.append(ticket["id"])
    for ticket_id in arrivals:
        try:
            service.apply_action(conn, ticket_id, "arrive", actor=f"tracking:{vehicle_id}", at=position.ts,
                                 fields={"note": "vehicle within the arrival radius"})
            stats.arrivals += 1
        except TransitionError as exc:  # someone moved the ticket on in between: their action stands
            log.info("tracking: ticket %s not marked arrived: %s", ticket_id, exc)
    return True


def _update_visit(cur: psycopg.Cursor[DictRow], ticket: dict[str, Any], vehicle_id: str, position: Position,
                  travel: TravelModel, arrival_radius_m: float, stats: TrackingStats) -> bool:
    """Update one visit's ETA and warnings; True when the vehicle has arrived."""
    job = dispatch.load_job(cur, ticket["id"])
    if job is None:
        return False
    events: list[tuple[str, dict[str, Any]]] = []
    to_collect = ticket["pickup_warehouse_id"] is not None and ticket["part_picked_up_at"] is None
    if to_collect and distance_km(position.lat, position.lon, ticket["w_lat"], ticket["w_lon"]) * 1000 \
            <= arrival_radius_m:
        to_collect = False
        cur.execute("UPDATE tickets SET part_picked_up_at = %s WHERE id = %s", (position.ts, ticket["id"]))
        events.append(("part_collected", {"warehouse": ticket["pickup_warehouse_id"],
                                          "part": ticket["required_part"]}))
    if to_collect:
        km = (distance_km(position.lat, position.lon, ticket["w_lat"], ticket["w_lon"])
              + distance_km(ticket["w_lat"], ticket["w_lon"], job.lat, job.lon))
        hours = travel.hours(km) + travel.pickup_min / 60
    else:
        km = distance_km(position.lat, position.lon, job.lat, job.lon)
        hours = travel.hours(km)
    eta = position.ts + timedelta(hours=hours)
    cur.execute("UPDATE tickets SET eta = %s, eta_updated_at = %s WHERE id = %s", (eta, position.ts, ticket["id"]))
    if ticket["late_warned_at"] is None and ticket["arrive_by"] is not None and eta > ticket["arrive_by"]:
        cur.execute("UPDATE tickets SET late_warned_at = %s WHERE id = %s", (position.ts, ticket["id"]))
        events.append(("late_arrival_warning", {"eta": eta.isoformat(), "arrive_by": ticket["arrive_by"].isoformat(),
                                                "late_by_min": round((eta - ticket["arrive_by"]).total_seconds() / 60,
                                                                     1)}))
        stats.late_warnings += 1
    for event, detail in events:
        cur.execute("INSERT INTO ticket_events (ticket_id, at, actor, event, detail) VALUES (%s, %s, %s, %s, %s)",
                    (ticket["id"], position.ts, f"tracking:{vehicle_id}", event, Jsonb(detail)))
        if event == "late_arrival_warning":
            notify(cur, "late_arrival", ticket_id=ticket["id"], at=position.ts, customer=True)
    return ticket["state"] == "en_route" and not to_collect and km * 1000 <= arrival_radius_m


class TrackingWorker:
    def __init__(self, database_url: str, mqtt_url: str, *, topic_root: str, travel: TravelModel | None = None,
                 arrival_radius_m: float = 300.0, future_tolerance_s: float = 300.0,
                 client_id: str = TRACKING_CLIENT_ID) -> None:
        self.database_url = database_url
        self.broker = mqtt.parse_mqtt_url(mqtt_url)
        self.topic_root = topic_root
        self.travel = travel or TravelModel()
        self.arrival_radius_m = arrival_radius_m
        self.future_tolerance_s = future_tolerance_s
        self.client_id = client_id
        self.stats = TrackingStats()
        self.rejected = BadInputLog(log, "tracking: rejected position",
                                    on_record=metrics.by_reason(metrics.TRACKING_REJECTED))
        self.session = mqtt.Session(self.broker, client_id, name="tracking",
                                    subscriptions=[position_subscription(topic_root)], clean_start=False,
                                    session_expiry_s=SESSION_EXPIRY_S, inbox_size=INBOX_MAX_POSITIONS,
                                    metrics_label="tracking")
        self.subscribed = self.session.ready

    def run(self, stop: threading.Event) -> None:
        self.session.start()
        try:
            while not stop.is_set():
                try:
                    with connect(self.database_url, autocommit=True, application_name="ironsight-tracking") as conn:
                        while not stop.is_set():
                            self._drain(conn, stop)
                except psycopg.OperationalError as exc:
                    metrics.db_connection_error("tracking")
                    log.warning("tracking lost the database (%s); retrying", exc)
                    stop.wait(1.0)
        finally:
            self.session.stop()

    def _drain(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        inbox = self.session.inbox
        try:
            batch = [inbox.get(timeout=0.5)]
        except queue.Empty:
            return
        while len(batch) < BATCH_MAX:
            try:
                batch.append(inbox.get_nowait())
            except queue.Empty:
                break
        now = datetime.now(UTC)
        for item in batch:
            if isinstance(item, InboundMessage):
                self.handle(conn, item.topic, item.payload, now)

    def handle(self, conn: psycopg.Connection, topic: str, payload: bytes, now: datetime) -> None:
        """Apply one position. Whatever goes wrong with it is counted and logged (``handler_error``
        for a defect of ours) and costs that position only; a lost database (OperationalError)
        propagates to the reconnect in ``run``."""
        try:
            self._handle(conn, topic, payload, now)
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            self.stats.rejected += 1
            self.rejected.record("handler_error", "%s on %s: %s", type(exc).__name__, topic[:100], str(exc)[:200],
                                 exc_info=True)

    def _handle(self, conn: psycopg.Connection, topic: str, payload: bytes, now: datetime) -> None:
        vehicle_id = vehicle_id_from_topic(self.topic_root, topic)
        try:
            if vehicle_id is None:
                raise InvalidTelemetry("bad_topic", topic[:100])
            position = decode_position(payload, now=now, future_tolerance_s=self.future_tolerance_s)
        except InvalidTelemetry as exc:
            self.stats.rejected += 1
            self.rejected.record(exc.reason, "on %s: %s", topic[:100], exc.detail[:200])
            return
        try:
            known = track_position(conn, vehicle_id, position, self.travel, self.arrival_radius_m, self.stats)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:  # one position the database refuses must not stop the others
            self.stats.rejected += 1
            self.rejected.record("refused_by_database", "of %s: %s", vehicle_id, exc)
            return
        if known:
            self.stats.positions += 1
            metrics.TRACKING_POSITIONS.inc()
        else:
            self.rejected.record("unknown_vehicle", "%s", vehicle_id)

    @property
    def dropped(self) -> int:
        """Positions dropped because the inbox was full."""
        return sum(self.session.dropped.by_reason.values())

