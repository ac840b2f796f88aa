"""Alarm lifecycle in SQL: raise (deduplicated by the database, flapping folded into one alarm), clear,
acknowledge, comment, assign, shelve and unshelve; every step is written to ``alarm_events``.

An alarm is active or cleared, and unacknowledged or acknowledged, independently. The unique partial
index ``alarms_one_active_idx`` keeps at most one active alarm per equipment and fault code, whichever
path (a new alarm, or a cleared one reopened) and however many workers race.

Functions that take ``now`` use it as the current time (tests pass a controllable clock); None means
the database's ``now()``. Callers own the transaction of the raise/clear functions (the alarms worker
commits them with its outbox cursor); the operator actions run in their own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core.db import one

# A cleared alarm whose fault comes back within this time is reopened rather than a new alarm made:
# a fault that raises and clears repeatedly is one incident, one alarm and one work order.
FLAP_WINDOW_S = 600.0
# Reopened more than this many times within FLAP_WINDOW_S: the alarm is marked flapping.
FLAP_THRESHOLD = 2
# Shelving hides a nuisance alarm for a while, never indefinitely: at most a day.
SHELVE_MAX_MINUTES = 24 * 60

SYSTEM_ACTOR = "system"

ALARM_COLUMNS = (
    "a.id, a.equipment_id, a.fault_code, a.severity, a.state, a.raised_at, a.cleared_at, a.occurrences, "
    "a.ticket_id, a.ticket_error, a.created_at, a.last_raised_at, a.acknowledged_at, a.acknowledged_by, "
    "a.assignee, a.shelved_until, a.shelved_by, a.flap_count, a.flapping, a.escalation_level"
)


class AlarmNotFound(LookupError):
    def __init__(self, alarm_id: int) -> None:
        super().__init__(f"no alarm {alarm_id}")
        self.alarm_id = alarm_id


@dataclass(frozen=True, slots=True)
class RaiseResult:
    alarm_id: int
    outcome: str  # 'raised' (a new alarm), 'occurrence' (already active) or 'reopened' (came back after a clear)
    flapping: bool = False

    @property
    def new(self) -> bool:
        return self.outcome == "raised"


def record_event(conn: psycopg.Connection, alarm_id: int, kind: str, actor: str, *,
                 at: datetime | None = None, detail: dict[str, Any] | None = None) -> int:
    """Append one event to the alarm's history; ``at`` None is the database's now()."""
    return one(conn.execute(
        "INSERT INTO alarm_events (alarm_id, at, kind, actor, detail) "
        "VALUES (%s, coalesce(%s::timestamptz, now()), %s, %s, %s) RETURNING id",
        (alarm_id, at, kind, actor, Jsonb(detail or {})),
    ))[0]


_OCCURRENCE = """
UPDATE alarms SET occurrences = occurrences + 1, last_fault_id = %s, last_raised_at = greatest(last_raised_at, %s)
WHERE equipment_id = %s AND fault_code = %s AND state = 'active'
RETURNING id, occurrences
"""

# The most recent alarm of this equipment and fault, when it cleared at most the flap window before
# this raise. Only the latest one: an older cleared alarm is history, not the incident that came back.
_REOPEN = """
WITH latest AS (SELECT id, cleared_at FROM alarms
                WHERE equipment_id = %(equipment_id)s AND fault_code = %(fault_code)s
                ORDER BY created_at DESC, id DESC LIMIT 1)
UPDATE alarms a SET state = 'active', cleared_at = NULL, occurrences = a.occurrences + 1,
       flap_count = a.flap_count + 1, last_fault_id = %(fault_id)s, last_raised_at = %(at)s
FROM latest
WHERE a.id = latest.id AND a.state = 'cleared'
  AND a.cleared_at <= %(at)s AND a.cleared_at >= %(at)s - make_interval(secs => %(window_s)s)
RETURNING a.id, latest.cleared_at, a.occurrences, a.flap_count
"""

_INSERT = """
INSERT INTO alarms (equipment_id, fault_code, severity, raised_at, last_raised_at, last_fault_id)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (equipment_id, fault_code) WHERE state = 'active'
DO UPDATE SET occurrences = alarms.occurrences + 1, last_fault_id = EXCLUDED.last_fault_id,
              last_raised_at = greatest(alarms.last_raised_at, EXCLUDED.last_raised_at)
RETURNING id, (xmax = 0) AS inserted, occurrences
"""


def raise_or_reopen(conn: psycopg.Connection, equipment_id: str, fault_code: str, severity: str,
                    at: datetime, fault_id: int, *, flap_window_s: float = FLAP_WINDOW_S,
                    flap_threshold: int = FLAP_THRESHOLD) -> RaiseResult:
    """Raise the fault's alarm: count it on the active alarm, reopen the alarm that cleared within the
    flap window, or make a new one. The database decides under concurrency (the unique partial index):
    a reopening that loses a race to a new alarm is rolled back to its savepoint and counted instead.
    """
    for _ in range(3):
        row = conn.execute(_OCCURRENCE, (fault_id, at, equipment_id, fault_code)).fetchone()
        if row:
            record_event(conn, row[0], "occurrence", SYSTEM_ACTOR, at=at,
                         detail={"fault_id": fault_id, "occurrences": row[1]})
            return RaiseResult(row[0], "occurrence")
        try:
            with conn.transaction():
                reopened = conn.execute(_REOPEN, {"fault_id": fault_id, "at": at, "equipment_id": equipment_id,
                                                  "fault_code": fault_code, "window_s": flap_window_s}).fetchone()
        except psycopg.errors.UniqueViolation:
            continue  # another worker made it active meanwhile: count this raise on that alarm
        if reopened:
            return _reopened(conn, reopened, at, fault_id, flap_window_s, flap_threshold)
        alarm_id, inserted, occurrences = one(conn.execute(
            _INSERT, (equipment_id, fault_code, severity, at, at, fault_id)))
        if inserted:
            record_event(conn, alarm_id, "raised", SYSTEM_ACTOR, at=at,
                         detail={"fault_id": fault_id, "severity": severity})
            return RaiseResult(alarm_id, "raised")
        record_event(conn, alarm_id, "occurrence", SYSTEM_ACTOR, at=at,
                     detail={"fault_id": fault_id, "occurrences": occurrences})
        return RaiseResult(alarm_id, "occurrence")
    raise RuntimeError(f"could not raise {fault_code} on {equipment_id}: kept losing races")


def _reopened(conn: psycopg.Connection, row: tuple[Any, ...], at: datetime, fault_id: int,
              flap_window_s: float, flap_threshold: int) -> RaiseResult:
    alarm_id, cleared_at, occurrences, flap_count = row
    record_event(conn, alarm_id, "reopened", SYSTEM_ACTOR, at=at,
                 detail={"fault_id": fault_id, "cleared_at": cleared_at.isoformat(), "occurrences": occurrences,
                         "flap_count": flap_count})
    recent = one(conn.execute(
        "SELECT count(*) FROM alarm_events WHERE alarm_id = %s AND kind = 'reopened' "
        "AND at > %s - make_interval(secs => %s) AND at <= %s",
        (alarm_id, at, flap_window_s, at),
    ))[0]
    flapping = recent > flap_threshold
    was_flapping = one(conn.execute("SELECT flapping FROM alarms WHERE id = %s", (alarm_id,)))[0]
    conn.execute("UPDATE alarms SET flapping = %s WHERE id = %s", (flapping, alarm_id))
    if flapping and not was_flapping:
        record_event(conn, alarm_id, "flapping", SYSTEM_ACTOR, at=at,
                     detail={"reopened_in_window": recent, "window_s": flap_window_s})
    return RaiseResult(alarm_id, "reopened", flapping)


def raise_alarm(conn: psycopg.Connection, equipment_id: str, fault_code: str, severity: str,
                at: datetime, fault_id: int) -> tuple[int, bool]:
    """Return (alarm id, whether it is new). A second raise of an active alarm only counts it."""
    result = raise_or_reopen(conn, equipment_id, fault_code, severity, at, fault_id)
    return result.alarm_id, result.new


def clear_alarm(conn: psycopg.Connection, equipment_id: str, fault_code: str, at: datetime) -> int | None:
    """Clear the active alarm unless another rule still holds a fault of the same code open."""
    row = conn.execute(
        """UPDATE alarms SET state = 'cleared', cleared_at = %s
           WHERE equipment_id = %s AND fault_code = %s AND state = 'active'
             AND NOT EXISTS (SELECT 1 FROM faults f WHERE f.equipment_id = alarms.equipment_id
                             AND f.fault_code = alarms.fault_code AND f.ended_at IS NULL)
           RETURNING id""",
        (at, equipment_id, fault_code),
    ).fetchone()
    if row is None:
        return None
    record_event(conn, row[0], "cleared", SYSTEM_ACTOR, at=at)
    return row[0]


# ---- operator actions (the API) ------------------------------------------------------------------

def get_alarm(conn: psycopg.Connection, alarm_id: int, *, lock: bool = False) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {ALARM_COLUMNS}, f.title, f.diagnosis FROM alarms a "
            "LEFT JOIN faults f ON f.id = a.last_fault_id WHERE a.id = %s" + (" FOR UPDATE OF a" if lock else ""),
            (alarm_id,),
        ).fetchone()
    if row is None:
        raise AlarmNotFound(alarm_id)
    return row


def get_alarm_with_history(conn: psycopg.Connection, alarm_id: int) -> dict[str, Any]:
    alarm = get_alarm(conn, alarm_id)
    with conn.cursor(row_factory=dict_row) as cur:
        alarm["history"] = cur.execute(
            "SELECT id, at, kind, actor, detail FROM alarm_events WHERE alarm_id = %s ORDER BY id",
            (alarm_id,)).fetchall()
        alarm["escalations"] = cur.execute(
            "SELECT level, status, created_at, attempts, next_try_at, last_error, sent_at "
            "FROM alarm_escalations WHERE alarm_id = %s ORDER BY level", (alarm_id,)).fetchall()
    return alarm


def _acting_for(detail: dict[str, Any] | None, on_behalf_of: str | None) -> dict[str, Any] | None:
    """An operator action's event detail with the person the actor acted for, if any: the actor is the
    account that did it; ``on_behalf_of`` is whom it says it acted for, kept beside, never instead."""
    if on_behalf_of is None:
        return detail
    return {**(detail or {}), "on_behalf_of": on_behalf_of}


def acknowledge(conn: psycopg.Connection, alarm_id: int, actor: str, *, note: str | None = None,
                on_behalf_of: str | None = None, now: datetime | None = None) -> tuple[dict[str, Any], bool]:
    """Acknowledge the alarm (active or cleared). Return (alarm, whether this call acknowledged it):
    acknowledging an acknowledged alarm changes nothing and keeps who acknowledged it first."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE alarms SET acknowledged_at = coalesce(%s::timestamptz, now()), acknowledged_by = %s "
            "WHERE id = %s AND acknowledged_at IS NULL RETURNING acknowledged_at",
            (now, actor, alarm_id),
        ).fetchone()
        if row:
            record_event(conn, alarm_id, "acknowledged", actor, at=row[0],
                         detail=_acting_for({"note": note} if note else None, on_behalf_of))
        return get_alarm(conn, alarm_id), row is not None


def add_comment(conn: psycopg.Connection, alarm_id: int, actor: str, text: str,
                *, on_behalf_of: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    with conn.transaction():
        get_alarm(conn, alarm_id)
        event_id = record_event(conn, alarm_id, "commented", actor, at=now,
                                detail=_acting_for({"text": text}, on_behalf_of))
        with conn.cursor(row_factory=dict_row) as cur:
            return one(cur.execute("SELECT id, at, kind, actor, detail FROM alarm_events WHERE id = %s",
                                         (event_id,)))


def assign(conn: psycopg.Connection, alarm_id: int, actor: str, assignee: str | None,
           *, on_behalf_of: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Set (or with None, remove) the assignee; assigning the current assignee again records nothing."""
    with conn.transaction():
        previous = get_alarm(conn, alarm_id, lock=True)["assignee"]
        if previous != assignee:
            conn.execute("UPDATE alarms SET assignee = %s WHERE id = %s", (assignee, alarm_id))
            record_event(conn, alarm_id, "assigned", actor, at=now,
                         detail=_acting_for({"assignee": assignee, "previous": previous}, on_behalf_of))
        return get_alarm(conn, alarm_id)


def shelve(conn: psycopg.Connection, alarm_id: int, actor: str, minutes: int, *, reason: str | None = None,
           on_behalf_of: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Shelve for ``minutes`` from now (shelving a shelved alarm sets a new end)."""
    if not 1 <= minutes <= SHELVE_MAX_MINUTES:
        raise ValueError(f"minutes must be between 1 and {SHELVE_MAX_MINUTES}")
    with conn.transaction():
        get_alarm(conn, alarm_id, lock=True)
        until = one(conn.execute(
            "UPDATE alarms SET shelved_until = coalesce(%s::timestamptz, now()) + make_interval(mins => %s), "
            "shelved_by = %s WHERE id = %s RETURNING shelved_until",
            (now, minutes, actor, alarm_id),
        ))[0]
        record_event(conn, alarm_id, "shelved", actor, at=now,
                     detail=_acting_for({"minutes": minutes, "until": until.isoformat(), "reason": reason},
                                        on_behalf_of))
        return get_alarm(conn, alarm_id)


def unshelve(conn: psycopg.Connection, alarm_id: int, actor: str, *, on_behalf_of: str | None = None,
             now: datetime | None = None) -> dict[str, Any]:
    """Unshelve before the period ends; an alarm that is not shelved is left as it is."""
    with conn.transaction():
        get_alarm(conn, alarm_id, lock=True)
        row = conn.execute(
            "UPDATE alarms SET shelved_until = NULL, shelved_by = NULL WHERE id = %s "
            "AND shelved_until > coalesce(%s::timestamptz, now()) RETURNING id",
            (alarm_id, now),
        ).fetchone()
        if row:
            record_event(conn, alarm_id, "unshelved", actor, at=now, detail=_acting_for({"early": True}, on_behalf_of))
        return get_alarm(conn, alarm_id)


def unshelve_expired(conn: psycopg.Connection, *, now: datetime | None = None) -> int:
    """End every shelving whose period is over (the alarms worker's round); return how many."""
    with conn.transaction():
        rows = conn.execute(
            "UPDATE alarms SET shelved_until = NULL, shelved_by = NULL "
            "WHERE shelved_until <= coalesce(%s::timestamptz, now()) RETURNING id",
            (now,),
        ).fetchall()
        for (alarm_id,) in rows:
            record_event(conn, alarm_id, "unshelved", SYSTEM_ACTOR, at=now, detail={"early": False})
    return len(rows)
