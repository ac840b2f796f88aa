"""Counters never run backwards: each reading's engine hours are held to the machine's known hours.

A machine's engine hours only count up, and at most as fast as time passes. Against a known point
(hours ``h`` taken at ``t``), a reading at ``ts`` is implausible when its hours are below ``h`` for
``ts >= t``, above ``h`` for ``ts < t``, or below ``h - (t - ts)`` for ``ts < t``; a jump ahead is
allowed (an hour meter can be set forward). An implausible value is not stored (the rest of the
reading is) and becomes a ``counter_implausible`` dead letter. A reading older than the machine's
newest by more than the late window is stored as backlog without its hours, so the hours and usage
already reported for a past day stay as they were.

The known points are the worker's own: loaded from ``equipment_state`` when the writer opens and
kept up with every batch it commits. Another worker's newer readings make them older, never wrong:
any accepted point is a valid bound, only a looser one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from core.telemetry import Reading

# Rounding in a controller's encoding (hours).
COUNTER_TOLERANCE_H = 0.05


@dataclass(frozen=True, slots=True)
class RefusedCounter:
    equipment_id: str
    ts: datetime
    hours: float
    known: float
    known_at: datetime


@dataclass(slots=True)
class CheckedReadings:
    readings: list[tuple[str, Reading]]
    refused: list[RefusedCounter] = field(default_factory=list)
    late: int = 0
    # Per machine: its newest reading's time, and its newest engine hours with their time.
    newest: dict[str, tuple[datetime, float | None, datetime | None]] = field(default_factory=dict)


class KnownCounters:
    def __init__(self, late_window_s: float) -> None:
        self.late_window = timedelta(seconds=late_window_s)
        # equipment id → (newest reading's ts, engine hours, when they were taken)
        self._known: dict[str, tuple[datetime, float | None, datetime | None]] = {}

    def load(self, conn: psycopg.Connection) -> None:
        self._known = {row[0]: (row[1], row[2], row[3]) for row in conn.execute(
            "SELECT equipment_id, last_ts, engine_hours, engine_hours_at FROM equipment_state")}
        conn.commit()

    def check(self, readings: list[tuple[str, Reading]]) -> CheckedReadings:
        checked = CheckedReadings(readings)
        known_points = self._known
        newest = checked.newest
        tolerance = COUNTER_TOLERANCE_H
        for index, (equipment_id, reading) in enumerate(readings):
            ts, hours = reading.ts, reading.engine_hours
            if hours is not None:
                known = known_points.get(equipment_id)
                if known is not None:
                    last_ts, known_hours, known_at = known
                    refused = False
                    if ts < last_ts - self.late_window:
                        checked.late += 1
                        refused = True
                    elif known_hours is not None and known_at is not None and (
                            hours < known_hours - tolerance if ts >= known_at
                            else hours > known_hours + tolerance
                            or hours < known_hours - (known_at - ts).total_seconds() / 3600 - tolerance):
                        checked.refused.append(RefusedCounter(equipment_id, ts, hours, known_hours, known_at))
                        refused = True
                    if refused:
                        if checked.readings is readings:
                            checked.readings = list(readings)
                        reading = reading._replace(engine_hours=None)
                        checked.readings[index] = (equipment_id, reading)
                        hours = None
            mine = newest.get(equipment_id)
            if mine is None:
                newest[equipment_id] = (ts, hours, ts if hours is not None else None)
            else:
                newest_ts, newest_hours, newest_hours_at = mine
                if hours is not None and (newest_hours_at is None or ts > newest_hours_at):
                    newest_hours, newest_hours_at = hours, ts
                newest[equipment_id] = (max(ts, newest_ts), newest_hours, newest_hours_at)
        return checked

    def remember(self, checked: CheckedReadings) -> None:
        """Take in a committed batch's newest points."""
        for equipment_id, (ts, hours, hours_at) in checked.newest.items():
            known = self._known.get(equipment_id)
            if known is None:
                self._known[equipment_id] = (ts, hours, hours_at)
                continue
            last_ts, known_hours, known_at = known
            if hours is not None and hours_at is not None and (known_at is None or hours_at > known_at):
                known_hours, known_at = hours, hours_at
            self._known[equipment_id] = (max(ts, last_ts), known_hours, known_at)
