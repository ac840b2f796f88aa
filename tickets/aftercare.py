"""After the repair: what a callback's result and a complaint's steps do to the work order.

- A survey callback answered records the six scores (tickets.service.record_survey): the ticket
  closes, or a complaint goes to the department responsible for the lowest score.
- A checking callback answered says whether the department's answer satisfied the customer: the
  complaint closes and so does the ticket (``second_callback``), or it is sent back.
- A callback that reaches nobody after every attempt: the survey ticket closes as unreachable
  (``close_unreachable``); an unchecked complaint goes to management.
- A complaint raised directly moves a ticket not yet worked on, or a resolved one, into
  ``complaint``; on a ticket in progress or already closed it runs beside it.
- Management closes an escalated complaint, and with it a ticket waiting in ``complaint``.

Each is one transaction over the callback, the complaint and the ticket.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from core.db import one
from tickets import callbacks, complaints, service, sla, workflow
from tickets.service import COMPLAINT_SCORE_MAX, SURVEY_INDICATORS


def _now(cur: psycopg.Cursor[DictRow], at: datetime | None) -> datetime:
    return at or one(cur.execute("SELECT now() AS now"))["now"]


def _check_contact(cur: psycopg.Cursor[DictRow], ticket: dict[str, Any], contact_id: int | None) -> None:
    if contact_id is not None and cur.execute(
            "SELECT 1 FROM customer_contacts c JOIN equipment e ON e.customer = c.customer_id "
            "WHERE c.id = %s AND e.id = %s", (contact_id, ticket["equipment_id"])).fetchone() is None:
        raise service.UnknownContact(f"no contact {contact_id} of the machine's customer")


def record_callback(conn: psycopg.Connection, callback_id: int, *, agent: str, outcome: str,
                    contact_id: int | None = None, note: str = "", scores: dict[str, int] | None = None,
                    satisfied: bool | None = None, department: str | None = None,
                    at: datetime | None = None) -> dict[str, Any]:
    """One call of a callback and what follows from it; returns the callback after it.

    ``outcome`` answered needs ``scores`` (a survey) or ``satisfied`` / ``scores`` (a complaint
    check; scores with one of 2 or less mean not satisfied). ``department``: where an unsatisfied
    complaint goes next (the same one by default)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        callback = callbacks.lock(cur, callback_id)
        ticket = service.lock(cur, callback["ticket_id"])
        at = _now(cur, at)
        _check_contact(cur, ticket, contact_id)
        if outcome == "answered":
            _answered(cur, callback, ticket, agent=agent, contact_id=contact_id, note=note, scores=scores,
                      satisfied=satisfied, department=department, at=at)
        else:
            state = callbacks.record_attempt(cur, callback, agent=agent, outcome=outcome, contact_id=contact_id,
                                             note=note, at=at)
            if state == "unreachable":
                _unreachable(cur, callback, ticket, agent=agent, at=at)
    found = callbacks.get_callback(conn, callback_id)
    assert found is not None
    return found


def _answered(cur: psycopg.Cursor[DictRow], callback: dict[str, Any], ticket: dict[str, Any], *, agent: str,
              contact_id: int | None, note: str, scores: dict[str, int] | None, satisfied: bool | None,
              department: str | None, at: datetime) -> None:
    if callback["purpose"] == "survey":
        if scores is None:
            raise workflow.MissingFields("an answered survey callback needs the six scores")
        callbacks.record_attempt(cur, callback, agent=agent, outcome="answered", contact_id=contact_id, note=note,
                                 at=at)
        service.record_survey(cur, ticket, scores, comment=note, actor=agent, at=at)
        return
    if satisfied is None:
        if scores is None:
            raise workflow.MissingFields("an answered complaint check needs satisfied or the six scores")
        satisfied = min(scores[name] for name in SURVEY_INDICATORS) > COMPLAINT_SCORE_MAX
    complaint = complaints.lock(cur, callback["complaint_id"])
    if complaint["state"] != "answered" or complaint["round"] != callback["complaint_round"]:
        raise complaints.ComplaintStateError(
            f"complaint {complaint['id']} is {complaint['state']} in round {complaint['round']}; this callback "
            f"checks round {callback['complaint_round']}")
    callbacks.record_attempt(cur, callback, agent=agent, outcome="answered", contact_id=contact_id, note=note, at=at)
    if scores is not None:
        next_round = one(cur.execute("SELECT coalesce(max(round), 0) + 1 AS n FROM ticket_surveys WHERE ticket_id = %s",
                                     (ticket["id"],)))["n"]
        service.insert_survey(cur, ticket["id"], next_round, scores, note, agent, at)
    state = complaints.verify(cur, complaint, satisfied=satisfied, actor=agent, at=at, note=note,
                              department=department)
    if state == "satisfied" and ticket["state"] == "complaint":
        service.transition_ticket(cur, ticket, workflow.transition_for("second_callback", "complaint",
                                                                       own_endpoint=True),
                                  {"note": note}, agent, at, extra={"complaint_id": complaint["id"]})


def _unreachable(cur: psycopg.Cursor[DictRow], callback: dict[str, Any], ticket: dict[str, Any], *, agent: str,
                 at: datetime) -> None:
    if callback["purpose"] == "survey":
        if ticket["state"] == "resolved":
            service.transition_ticket(cur, ticket, workflow.transition_for("close_unreachable", "resolved",
                                                                           own_endpoint=True),
                                      {}, agent, at, extra={"callback_id": callback["id"],
                                                            "attempts": callback["attempts"] + 1})
        return
    complaint = complaints.lock(cur, callback["complaint_id"])
    if complaint["state"] == "answered":
        complaints.escalate(cur, complaint, at=at, actor=agent,
                            reason="the customer could not be reached to check the department's answer")


def raise_complaint(conn: psycopg.Connection, ticket_id: int, *, department: str, actor: str,
                    description: str = "", at: datetime | None = None) -> dict[str, Any]:
    """A complaint raised directly about a ticket, sent to ``department``."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        ticket = service.lock(cur, ticket_id)
        at = _now(cur, at)
        complaint = complaints.open_complaint(cur, ticket_id, department=department, source="direct", actor=actor,
                                              at=at, description=description)
        detail = complaints.summary(complaint) | {"description": description}
        if ticket["state"] in workflow.BY_ACTION["complain"].sources:
            if ticket["state"] == "resolved":
                callbacks.cancel_open(cur, ticket_id, at, "complaint raised before the callback")
            service.transition_ticket(cur, ticket, workflow.transition_for("complain", ticket["state"],
                                                                           own_endpoint=True),
                                      {}, actor, at, extra=detail)
        else:
            # A complaint beside work in progress, or about a closed order: the ticket's state stays.
            cur.execute("INSERT INTO ticket_events (ticket_id, at, actor, event, detail) "
                        "VALUES (%s, %s, %s, 'complaint_opened', %s)", (ticket_id, at, actor, Jsonb(detail)))
    found = complaints.get_complaint(conn, complaint["id"])
    assert found is not None
    return found


def answer_complaint(conn: psycopg.Connection, complaint_id: int, *, answer: str, actor: str,
                     at: datetime | None = None) -> dict[str, Any]:
    """The department's answer; the checking callback goes into the queue."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        complaint = complaints.lock(cur, complaint_id)
        ticket = service.lock(cur, complaint["ticket_id"])
        complaints.answer(cur, complaint, answer_text=answer, actor=actor, at=_now(cur, at), ticket=ticket,
                          callback_within=sla.callback_within(cur, ticket))
    found = complaints.get_complaint(conn, complaint_id)
    assert found is not None
    return found


def close_complaint(conn: psycopg.Connection, complaint_id: int, *, note: str, actor: str,
                    at: datetime | None = None) -> dict[str, Any]:
    """Management closes an escalated complaint (and the ticket waiting on it)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        complaint = complaints.lock(cur, complaint_id)
        ticket = service.lock(cur, complaint["ticket_id"])
        at = _now(cur, at)
        complaints.close(cur, complaint, note=note, actor=actor, at=at)
        if ticket["state"] == "complaint":
            service.transition_ticket(cur, ticket, workflow.transition_for("close_complaint", "complaint",
                                                                           own_endpoint=True),
                                      {"reason": note}, actor, at, extra={"complaint_id": complaint_id})
    found = complaints.get_complaint(conn, complaint_id)
    assert found is not None
    return found


_COUNTS = """
SELECT (SELECT count(*) FROM callbacks WHERE state = 'open') AS callbacks_open,
       (SELECT count(*) FROM callbacks WHERE state = 'open' AND due_at < now()) AS callbacks_overdue,
       (SELECT count(*) FROM callbacks WHERE state = 'done') AS callbacks_done,
       (SELECT count(*) FROM complaints WHERE closed_at IS NULL) AS complaints_open,
       (SELECT count(*) FROM complaints WHERE state = 'with_department' AND answer_due < now()) AS complaints_overdue,
       (SELECT count(*) FROM complaints WHERE closed_at IS NOT NULL) AS complaints_closed
"""


def queue_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Callbacks open, overdue and done; complaints open, past their answer deadline and closed."""
    with conn.cursor(row_factory=dict_row) as cur:
        return one(cur.execute(_COUNTS))
