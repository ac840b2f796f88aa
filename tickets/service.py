"""Work orders: creation (idempotent), actions through the state machine (tickets.workflow),
callback surveys, listing, history. SQL for the tickets tables lives here (SLA timers: tickets.sla,
KPIs: tickets.kpis)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from core.db import one, where_equal
from core.errors import IronSightError
from notifications import notify
from tickets import callbacks, complaints, dispatch, groups, sla, stock, workflow
from tickets.dispatch import TravelModel
from tickets.workflow import ACTIVE_STATES, OPEN_STATES, PREVIOUS, TransitionError

SURVEY_INDICATORS = ("product_quality", "overall_service", "timeliness", "attitude", "engineer_skill", "parts_supply")
# A score at or below this opens a complaint follow-up.
COMPLAINT_SCORE_MAX = 2
# Who a complaint about each indicator goes back to.
RESPONSIBLE_DEPARTMENT = {
    "product_quality": "quality / R&D",
    "overall_service": "service management",
    "timeliness": "dispatch",
    "attitude": "service management",
    "engineer_skill": "service engineering",
    "parts_supply": "parts logistics",
}


# How a request came in (tickets.channel).
TICKET_CHANNELS = ("phone", "portal", "email", "sms", "alarm", "app")


class UnknownEquipment(IronSightError):
    pass


class IdempotencyConflict(IronSightError):
    """The idempotency key or alarm was already used for a different request."""


class TicketNotFound(IronSightError):
    pass


class UnknownContact(IronSightError):
    """The ticket names a contact that is not one of the machine's customer's."""


class UnknownAlarm(IronSightError):
    """The ticket names a source alarm that does not exist, or that is another machine's."""


@dataclass(frozen=True, slots=True)
class NewTicket:
    equipment_id: str
    title: str
    priority: str
    description: str = ""
    fault_code: str | None = None
    source_alarm_id: int | None = None
    idempotency_key: str | None = None
    created_by: str = "api"
    diagnosis: dict[str, Any] | None = None
    remote_resolvable: bool | None = None
    created_at: datetime | None = None  # now when None; a simulated clock or an import passes its own
    kind: str = "fault"
    # How the request came in; None: "alarm" for an alarm's ticket, else "phone".
    channel: str | None = None
    contact_id: int | None = None


_COLUMNS = ("id, equipment_id, title, description, priority, state, kind, channel, contact_id, fault_code, "
            "source_alarm_id, "
            "created_by, created_at, updated_at, diagnosis, remote_resolvable, engineer, expert_group, "
            "escalated_from, resolution, first_time_fix, work_done, parts_used, respond_by, arrive_by, resolve_by, "
            "responded_at, dispatched_at, arrived_at, resolved_at, ended_at, vehicle_id, pickup_warehouse_id, "
            "required_part, part_picked_up_at, eta, eta_updated_at, late_warned_at")


def create_ticket(conn: psycopg.Connection, new: NewTicket, *,
                  check_alarm: bool = False) -> tuple[dict[str, Any], bool]:
    """Return (ticket, created). A repeat with the same alarm or idempotency key returns the first
    ticket; an alarm for a machine whose ticket is still being worked on (``ACTIVE_STATES``) is
    linked to that ticket. The response and resolution deadlines come from the customer's contract.

    ``check_alarm``: refuse (UnknownAlarm) a ``source_alarm_id`` that is not an existing alarm of
    the ticket's machine. Every caller but the alarms service asks for it: a ticket claiming an alarm
    that does not exist yet would take that alarm's id, and the alarm's own ticket would then be
    refused (another machine) or be that one (the same) on every retry."""
    ticket, created = _create_ticket(conn, new, check_alarm=check_alarm)
    with conn.cursor(row_factory=dict_row) as cur:
        _attach_sla(cur, [ticket])
    return ticket, created


def _create_ticket(conn: psycopg.Connection, new: NewTicket, *, check_alarm: bool) -> tuple[dict[str, Any], bool]:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if check_alarm and new.source_alarm_id is not None:
            alarm = cur.execute("SELECT equipment_id FROM alarms WHERE id = %s", (new.source_alarm_id,)).fetchone()
            if alarm is None:
                raise UnknownAlarm(f"no alarm {new.source_alarm_id}")
            if alarm["equipment_id"] != new.equipment_id:
                raise UnknownAlarm(f"alarm {new.source_alarm_id} is not on equipment {new.equipment_id!r}")
        existing = _find_repeat(cur, new)
        if existing is not None:
            return existing, False
        contract = sla.contract_for(cur, new.equipment_id, new.kind)
        if contract is None:
            raise UnknownEquipment(new.equipment_id)
        if new.contact_id is not None and cur.execute(
                "SELECT 1 FROM customer_contacts c JOIN equipment e ON e.customer = c.customer_id "
                "WHERE c.id = %s AND e.id = %s", (new.contact_id, new.equipment_id)).fetchone() is None:
            raise UnknownContact(f"no contact {new.contact_id} of the machine's customer")
        if new.source_alarm_id is not None:
            # Serialise alarm tickets per machine so that two alarms at once make one work order.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('ticket:' || %s))", (new.equipment_id,))
            open_ticket = cur.execute(
                f"SELECT {_COLUMNS} FROM tickets WHERE equipment_id = %s AND state = ANY(%s) ORDER BY id LIMIT 1",
                (new.equipment_id, list(ACTIVE_STATES)),
            ).fetchone()
            if open_ticket is not None:
                _link_alarm(cur, open_ticket["id"], new.source_alarm_id, new.created_by, new.fault_code)
                return open_ticket, False
        row = cur.execute(
            f"""INSERT INTO tickets (equipment_id, title, description, priority, kind, channel, contact_id, fault_code,
                                    source_alarm_id, idempotency_key, created_by, diagnosis, remote_resolvable,
                                    created_at, updated_at, respond_by, resolve_by)
                SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, at, at, at + %s, at + %s
                FROM (SELECT COALESCE(%s::timestamptz, now()) AS at) AS clock
                ON CONFLICT DO NOTHING
                RETURNING {_COLUMNS}""",
            (new.equipment_id, new.title, new.description, new.priority, new.kind,
             new.channel or ("alarm" if new.source_alarm_id is not None else "phone"), new.contact_id,
             new.fault_code, new.source_alarm_id,
             new.idempotency_key, new.created_by, Jsonb(new.diagnosis) if new.diagnosis is not None else None,
             new.remote_resolvable, timedelta(hours=contract.respond_h), timedelta(hours=contract.resolve_h),
             new.created_at),
        ).fetchone()
        if row is None:
            # A concurrent request with the same key won the race; its ticket is the answer.
            existing = _find_repeat(cur, new)
            if existing is None:
                raise IdempotencyConflict("ticket insert conflicted but no matching ticket was found")
            return existing, False
        cur.execute(
            "INSERT INTO ticket_events (ticket_id, at, actor, event, detail) VALUES (%s, %s, %s, 'created', %s)",
            (row["id"], row["created_at"], new.created_by, Jsonb({"source_alarm_id": new.source_alarm_id})),
        )
        notify(cur, "work_order_opened", ticket_id=row["id"], at=row["created_at"], customer=True)
        if new.source_alarm_id is not None:
            cur.execute("INSERT INTO ticket_alarms (alarm_id, ticket_id) VALUES (%s, %s)",
                        (new.source_alarm_id, row["id"]))
        return row, True


def _link_alarm(cur: psycopg.Cursor[DictRow], ticket_id: int, alarm_id: int, actor: str,
                fault_code: str | None) -> None:
    cur.execute("INSERT INTO ticket_alarms (alarm_id, ticket_id) VALUES (%s, %s)", (alarm_id, ticket_id))
    cur.execute(
        "INSERT INTO ticket_events (ticket_id, actor, event, detail) VALUES (%s, %s, 'alarm_linked', %s)",
        (ticket_id, actor, Jsonb({"alarm_id": alarm_id, "fault_code": fault_code})),
    )


def _find_repeat(cur: psycopg.Cursor[DictRow], new: NewTicket) -> dict[str, Any] | None:
    if new.source_alarm_id is not None:
        row = cur.execute(
            f"SELECT {_COLUMNS} FROM tickets WHERE id = (SELECT ticket_id FROM ticket_alarms WHERE alarm_id = %s)",
            (new.source_alarm_id,),
        ).fetchone()
        if row is not None:
            return _same_equipment(row, new)
    if new.idempotency_key is None:
        return None
    row = cur.execute(f"SELECT {_COLUMNS} FROM tickets WHERE idempotency_key = %s", (new.idempotency_key,)).fetchone()
    return _same_equipment(row, new) if row is not None else None


def _same_equipment(row: dict[str, Any], new: NewTicket) -> dict[str, Any]:
    if row["equipment_id"] != new.equipment_id:
        raise IdempotencyConflict(f"key already used for ticket {row['id']} on another equipment")
    return row


def get_ticket(conn: psycopg.Connection, ticket_id: int) -> dict[str, Any] | None:
    """The ticket with its SLA timers, its history (every event, oldest first) and its surveys."""
    with conn.cursor(row_factory=dict_row) as cur:
        ticket = cur.execute(f"SELECT {_COLUMNS} FROM tickets WHERE id = %s", (ticket_id,)).fetchone()
        if ticket is None:
            return None
        _attach_sla(cur, [ticket])
        ticket["history"] = cur.execute(
            "SELECT at, actor, event, detail FROM ticket_events WHERE ticket_id = %s ORDER BY at, id", (ticket_id,)
        ).fetchall()
        ticket["surveys"] = cur.execute(
            f"SELECT round, {', '.join(SURVEY_INDICATORS)}, comment, actor, at FROM ticket_surveys "
            "WHERE ticket_id = %s ORDER BY round", (ticket_id,)
        ).fetchall()
        ticket["consultations"] = cur.execute(
            "SELECT id, group_name, question, asked_by, asked_at, answered_by, answered_at, outcome "
            "FROM ticket_consultations WHERE ticket_id = %s ORDER BY id", (ticket_id,)).fetchall()
        ticket["callbacks"] = cur.execute(
            "SELECT id, purpose, complaint_id, complaint_round, state, due_at, attempts, assigned_to, done_at "
            "FROM callbacks WHERE ticket_id = %s ORDER BY id", (ticket_id,)).fetchall()
        ticket["complaints"] = cur.execute(
            "SELECT id, source, state, department, round, answer_due, opened_at, closed_at FROM complaints "
            "WHERE ticket_id = %s ORDER BY id", (ticket_id,)).fetchall()
        return ticket


def _attach_sla(cur: psycopg.Cursor[DictRow], tickets: list[dict[str, Any]]) -> None:
    if not tickets:
        return
    alerts: dict[int, list[dict[str, Any]]] = {}
    for alert in cur.execute("SELECT ticket_id, timer, kind, at FROM ticket_sla_alerts WHERE ticket_id = ANY(%s)",
                             ([t["id"] for t in tickets],)):
        alerts.setdefault(alert["ticket_id"], []).append(alert)
    now = datetime.now(UTC)
    for ticket in tickets:
        ticket["sla"] = sla.timer_status(ticket, alerts.get(ticket["id"], []), now)


def list_tickets(conn: psycopg.Connection, *, equipment_id: str | None, state: str | None,
                 limit: int, offset: int, engineer: str | None = None,
                 customer: str | None = None) -> tuple[list[dict[str, Any]], int]:
    where, params = where_equal(equipment_id=equipment_id, state=state, engineer=engineer)
    if customer is not None:
        where = ((where + " AND " if where else "WHERE ")
                 + "equipment_id IN (SELECT id FROM equipment WHERE customer = %s)")
        params.append(customer)
    with conn.cursor(row_factory=dict_row) as cur:
        count = one(cur.execute(f"SELECT count(*) AS n FROM tickets {where}", params))["n"]
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM tickets {where} ORDER BY id DESC LIMIT %s OFFSET %s", [*params, limit, offset]
        ).fetchall()
        _attach_sla(cur, rows)
    return rows, count


ANNOUNCED_EVENTS = ("dispatched", "late_arrival_warning", "arrived", "resolved", "complaint_opened", "closed",
                    "complaint_answered", "complaint_sent_back", "complaint_satisfied", "second_callback",
                    "complaint_escalated", "closed_by_management", "closed_unreachable")


def count_by_state(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT state, count(*) FROM tickets GROUP BY state").fetchall())


def events_after(conn: psycopg.Connection, after_id: int, *, limit: int) -> list[dict[str, Any]]:
    """Milestones of the work-order loop (``ANNOUNCED_EVENTS``) newer than ``after_id``, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT e.id, e.ticket_id, e.at, e.actor, e.event, e.detail, t.equipment_id, t.engineer, t.eta
               FROM ticket_events e JOIN tickets t ON t.id = e.ticket_id
               WHERE e.id > %s AND e.event = ANY(%s) ORDER BY e.id LIMIT %s""",
            (after_id, list(ANNOUNCED_EVENTS), limit),
        ).fetchall()


def last_event_id(conn: psycopg.Connection) -> int:
    return one(conn.execute("SELECT COALESCE(max(id), 0) FROM ticket_events"))[0]


def count_open(conn: psycopg.Connection) -> int:
    return one(conn.execute("SELECT count(*) FROM tickets WHERE state = ANY(%s)", (list(OPEN_STATES),)))[0]


def apply_action(conn: psycopg.Connection, ticket_id: int, action: str, *, actor: str,
                 fields: dict[str, Any] | None = None, at: datetime | None = None,
                 travel: TravelModel | None = None) -> dict[str, Any]:
    """Take ``action`` on the ticket (tickets.workflow.TRANSITIONS) and return the ticket after it.

    Raises TicketNotFound, UnknownAction, TransitionError (not allowed in the current state) or
    MissingFields. ``fields``: reason, note, engineer, warehouse, arrive_by, expert_group, work_done,
    parts_used, first_time_fix, outcome (reassign: what the expert group found). ``at`` defaults to now.

    ``dispatch`` plans the engineer's trip (tickets.dispatch; DispatchRefused when the engineer cannot
    be sent): the vehicle, the warehouse where the diagnosed part is collected (its unit moves to the
    vehicle at once, so no other dispatch counts on it), the ETA and — unless ``arrive_by`` is given
    — the promised arrival. ``resolve`` takes ``parts_used`` out of the vehicle's stock.
    """
    fields = {k: v for k, v in (fields or {}).items() if v is not None}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        ticket = lock(cur, ticket_id)
        transition = workflow.transition_for(action, ticket["state"])
        workflow.check_required(transition, fields)
        at = at or one(cur.execute("SELECT now() AS now"))["now"]
        transition_ticket(cur, ticket, transition, fields, actor, at, travel=travel or TravelModel())
    result = get_ticket(conn, ticket_id)
    assert result is not None
    return result


def submit_survey(conn: psycopg.Connection, ticket_id: int, scores: dict[str, int], *, actor: str,
                  comment: str = "", at: datetime | None = None, contact_id: int | None = None) -> dict[str, Any]:
    """The callback survey of a resolved ticket: closes it, or opens a complaint follow-up when
    any indicator scores ``COMPLAINT_SCORE_MAX`` or less. Completes the ticket's open survey callback,
    recording ``contact_id`` as the contact who answered."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        ticket = lock(cur, ticket_id)
        at = at or one(cur.execute("SELECT now() AS now"))["now"]
        callback = callbacks.open_for(cur, ticket_id, "survey")
        if callback is not None and ticket["state"] == "resolved":
            callbacks.record_attempt(cur, callback, agent=actor, outcome="answered", contact_id=contact_id,
                                     note=comment, at=at)
        record_survey(cur, ticket, scores, comment=comment, actor=actor, at=at)
    result = get_ticket(conn, ticket_id)
    assert result is not None
    return result


def record_survey(cur: psycopg.Cursor[DictRow], ticket: dict[str, Any], scores: dict[str, int], *, comment: str,
                  actor: str, at: datetime) -> None:
    """Store the survey of a resolved (locked) ticket and close it, or open a complaint to the
    department responsible for the lowest score (the others responsible are named in its history)."""
    if ticket["state"] != "resolved":
        raise TransitionError(
            f"a callback survey needs a resolved ticket; ticket {ticket['id']} is {ticket['state']!r}")
    insert_survey(cur, ticket["id"], 1, scores, comment, actor, at)
    low = [name for name in SURVEY_INDICATORS if scores[name] <= COMPLAINT_SCORE_MAX]
    detail: dict[str, Any] = {"scores": {name: scores[name] for name in SURVEY_INDICATORS}, "comment": comment}
    if low:
        detail |= {"low": low, "responsible": sorted({RESPONSIBLE_DEPARTMENT[name] for name in low})}
    if low:
        worst = min(low, key=lambda name: (scores[name], SURVEY_INDICATORS.index(name)))
        detail |= complaints.summary(complaints.open_complaint(
            cur, ticket["id"], department=RESPONSIBLE_DEPARTMENT[worst], source="survey", actor=actor, at=at,
            indicators=low, description=comment))
    transition = workflow.transition_for("complain" if low else "callback", "resolved", own_endpoint=True)
    transition_ticket(cur, ticket, transition, {}, actor, at, extra=detail)


def lock(cur: psycopg.Cursor[DictRow], ticket_id: int) -> dict[str, Any]:
    ticket = cur.execute(f"SELECT {_COLUMNS} FROM tickets WHERE id = %s FOR UPDATE", (ticket_id,)).fetchone()
    if ticket is None:
        raise TicketNotFound(f"no ticket {ticket_id}")
    return ticket


def insert_survey(cur: psycopg.Cursor[DictRow], ticket_id: int, round_: int, scores: dict[str, int], comment: str,
                  actor: str, at: datetime) -> None:
    cur.execute(
        f"""INSERT INTO ticket_surveys (ticket_id, round, {', '.join(SURVEY_INDICATORS)}, comment, actor, at)
            VALUES (%s, %s, {', '.join(['%s'] * len(SURVEY_INDICATORS))}, %s, %s, %s)""",
        (ticket_id, round_, *(scores[name] for name in SURVEY_INDICATORS), comment, actor, at),
    )


def transition_ticket(cur: psycopg.Cursor[DictRow], ticket: dict[str, Any], transition: workflow.Transition,
                      fields: dict[str, Any], actor: str, at: datetime, extra: dict[str, Any] | None = None,
                      travel: TravelModel | None = None) -> None:
    """Apply a validated transition: the ticket's columns, the stock it moves, then its event."""
    source = ticket["state"]
    target = transition.target
    if target == PREVIOUS:
        target = ticket["escalated_from"] or "accepted"
    target = target or source
    changes: dict[str, Any] = {"state": target, "updated_at": at}
    if source == "created" and target != "created":
        changes["responded_at"] = at
    action = transition.action
    extra = dict(extra or {})
    if action == "dispatch":
        plan = dispatch.plan_for_engineer(cur, ticket["id"], fields["engineer"], at, travel or TravelModel(),
                                          fields.get("warehouse"))
        changes |= {"engineer": fields["engineer"], "dispatched_at": at, "part_picked_up_at": None,
                    "late_warned_at": None, "vehicle_id": None, "pickup_warehouse_id": None, "eta": None,
                    "required_part": (ticket["diagnosis"] or {}).get("spare_part")}
        promised = fields.get("arrive_by")
        if plan is not None:
            eta = at + timedelta(hours=plan.travel_h)
            changes |= {"vehicle_id": plan.vehicle_id, "pickup_warehouse_id": plan.warehouse_id, "eta": eta,
                        "eta_updated_at": at}
            promised = promised or eta + timedelta(minutes=(travel or TravelModel()).margin_min)
            extra["plan"] = plan.as_dict() | {"eta": eta.isoformat()}
            if plan.warehouse_id is not None and plan.part is not None:
                stock.move(cur, plan.part, 1, ("warehouse", plan.warehouse_id), ("vehicle", plan.vehicle_id),
                           ticket_id=ticket["id"], reason="collect for visit", at=at)
        changes["arrive_by"] = promised or ticket["arrive_by"] or _default_arrive_by(cur, ticket)
    elif action in ("return", "cancel") and ticket["pickup_warehouse_id"] and ticket["part_picked_up_at"] is None \
            and ticket["required_part"] and ticket["vehicle_id"]:
        # The part was set aside for this visit but never collected: back on the shelf.
        stock.move(cur, ticket["required_part"], 1, ("vehicle", ticket["vehicle_id"]),
                   ("warehouse", ticket["pickup_warehouse_id"]), ticket_id=ticket["id"],
                   reason=f"visit {action}ed", at=at)
    if action == "return":
        changes |= {"engineer": None, "vehicle_id": None, "pickup_warehouse_id": None, "eta": None}
    elif action == "arrive":
        changes["arrived_at"] = at
    elif action in ("resolve", "resolve_remote"):
        changes |= {"resolution": "on_site" if action == "resolve" else "remote", "resolved_at": at,
                    "work_done": fields["work_done"], "first_time_fix": fields.get("first_time_fix"),
                    "parts_used": Jsonb(fields.get("parts_used") or [])}
        if action == "resolve" and ticket["vehicle_id"] and fields.get("parts_used"):
            extra["stock"] = [
                stock.use(cur, used["part"], used.get("quantity", 1), ("vehicle", ticket["vehicle_id"]),
                          ticket_id=ticket["id"], at=at)
                for used in fields["parts_used"]
            ]
    elif action == "escalate":
        groups.require(cur, fields["expert_group"], "expert")
        changes |= {"expert_group": fields["expert_group"], "escalated_from": source}
        extra["consultation_id"] = one(cur.execute(
            "INSERT INTO ticket_consultations (ticket_id, group_name, question, asked_by, asked_at) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (ticket["id"], fields["expert_group"], fields.get("reason") or fields.get("note") or "", actor, at)))["id"]
    elif action == "reassign":
        changes |= {"expert_group": None, "escalated_from": None}
        cur.execute("UPDATE ticket_consultations SET answered_by = %s, answered_at = %s, outcome = %s "
                    "WHERE ticket_id = %s AND answered_at IS NULL",
                    (actor, at, fields.get("outcome") or fields.get("reason") or fields.get("note") or "",
                     ticket["id"]))
    if target in workflow.TERMINAL_STATES:
        changes["ended_at"] = at
    assignments = ", ".join(f"{column} = %s" for column in changes)
    cur.execute(f"UPDATE tickets SET {assignments} WHERE id = %s", [*changes.values(), ticket["id"]])
    detail: dict[str, Any] = {"action": action, "from": source, "to": target}
    detail |= {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}
    if action == "dispatch":
        detail["arrive_by"] = changes["arrive_by"].isoformat()
    detail |= extra
    if target == "resolved":
        detail |= callbacks.schedule(cur, ticket, "survey", at, within=sla.callback_within(cur, ticket)) or {}
    cur.execute("INSERT INTO ticket_events (ticket_id, at, actor, event, detail) VALUES (%s, %s, %s, %s, %s)",
                (ticket["id"], at, actor, transition.event_name, Jsonb(detail)))
    _notify_transition(cur, ticket["id"], action, target, fields, at)


def _notify_transition(cur: psycopg.Cursor[DictRow], ticket_id: int, action: str, target: str,
                       fields: dict[str, Any], at: datetime) -> None:
    """Who hears of the step, in its transaction: the customer of the visit's milestones, the
    engineer of the job, the expert group of the question."""
    if action == "dispatch":
        notify(cur, "engineer_dispatched", ticket_id=ticket_id, at=at, customer=True)
        notify(cur, "job_assigned", ticket_id=ticket_id, at=at, engineer=fields["engineer"])
    elif action == "arrive":
        notify(cur, "engineer_arrived", ticket_id=ticket_id, at=at, customer=True)
    elif action == "escalate":
        notify(cur, "expert_consultation", ticket_id=ticket_id, at=at, group=fields["expert_group"],
               facts={"question": fields.get("reason") or fields.get("note") or ""})
    elif target == "resolved":
        notify(cur, "work_order_resolved", ticket_id=ticket_id, at=at, customer=True)


def _default_arrive_by(cur: psycopg.Cursor[DictRow], ticket: dict[str, Any]) -> datetime:
    """Without a distance-based promise from dispatch: the response deadline + the contract's arrive_h."""
    contract = sla.contract_for(cur, ticket["equipment_id"]) or sla.Contract()
    return ticket["respond_by"] + timedelta(hours=contract.arrive_h)
