"""SQL shared by the dashboards: variable filters, the fleet state of each machine, orderings.

Rules every dashboard query keeps, because Grafana's PostgreSQL data source runs them as they are:
- plain PostgreSQL only (``date_bin``, never TimescaleDB's ``time_bucket`` by hand): Grafana's
  ``$__timeGroup`` macros emit ``time_bucket`` themselves when the data source's TimescaleDB
  toggle is on;
- no SQL comments (recent Grafana versions strip them, older ones do not) and no ``$$`` quoting
  (Grafana's template syntax owns ``$``);
- a macro's arguments hold no parentheses (Grafana's macro pattern stops at the first ``)``);
- time series are ordered by time; columns are text, numbers, booleans or timestamps.
"""

from __future__ import annotations

from core.settings import Settings
from core.vocabulary import SEVERITIES as CORE_SEVERITIES
from core.vocabulary import WORKING_RPM

ALL = "__all"
# What Grafana substitutes, unformatted, when "All" is chosen (see blocks.query_variable).
ALL_VALUE = f"'{ALL}'"

# Most serious first, as the dashboards list them.
SEVERITIES = tuple(reversed(CORE_SEVERITIES))
SEVERITY_COLORS = {"critical": "dark-red", "major": "red", "minor": "orange", "warning": "yellow"}

# Ticket states in which a work order is still open (tickets.workflow.OPEN_STATES; a test keeps
# the two equal).
OPEN_TICKET_STATES = (
    "created", "accepted", "remote_diagnosis", "escalated", "dispatched", "en_route", "on_site", "resolved",
    "complaint",
)

# What the map calls a machine's state, first match wins.
# tickets.service.SURVEY_INDICATORS (dashboards import only core; a test keeps the two equal).
SURVEY_INDICATORS = ("product_quality", "overall_service", "timeliness", "attitude", "engineer_skill", "parts_supply")

STATE_IN_ALARM = "in alarm"
STATE_OFFLINE = "offline"
STATE_WORKING = "working"
STATE_IDLE = "idle"
STATES = (STATE_WORKING, STATE_IDLE, STATE_OFFLINE, STATE_IN_ALARM)
STATE_COLORS = {STATE_WORKING: "green", STATE_IDLE: "blue", STATE_OFFLINE: "#8e8e8e", STATE_IN_ALARM: "red"}
# Silence after which a machine shows offline: the API's default (IRONSIGHT_OFFLINE_AFTER_S).
OFFLINE_AFTER_S = Settings.model_fields["offline_after_s"].default
# Alarms that do not make a machine "in alarm" on the map: being offline has its own colour.
NOT_ALARM_STATE_FAULTS = ("OFFLINE",)


def quoted(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def any_of(variable: str, column: str) -> str:
    """``column`` is one of the values chosen in the multi-value ``variable`` (or "All" is chosen)."""
    return f"('{ALL}' IN (${variable}) OR {column} IN (${variable}))"


def severity_rank(column: str) -> str:
    """1 for critical … 4 for warning: ORDER BY it to see the worst first."""
    return f"array_position(ARRAY[{quoted(SEVERITIES)}], {column})"


OPEN_TICKET = f"t.state IN ({quoted(OPEN_TICKET_STATES)})"


def remedy_steps(cause: str) -> str:
    """The remedy steps of ``cause`` (a cause of a fault's diagnosis, jsonb), numbered, one a line."""
    return f"""array_to_string(ARRAY(
           SELECT n || '. ' || step
           FROM jsonb_array_elements_text({cause} -> 'remedy') WITH ORDINALITY AS r(step, n)
           ORDER BY n), chr(10))"""


def fleet_state(where: str) -> str:
    """A ``fleet`` CTE: each machine of the register matching ``where`` (over ``e``, the equipment),
    its latest state, active alarms and map state (``state``). Continue with ``SELECT … FROM fleet``.

    ``online`` is the API's (ingest.queries): a last will or goodbye of the controller newer than its
    last telemetry takes the machine offline at once, not only after the silence."""
    return f"""
WITH machines AS (
    SELECT e.id AS equipment_id, e.serial, e.model, e.kind, e.customer, e.site,
           s.lat, s.lon, s.engine_rpm, s.oil_temp_c, s.coolant_temp_c, s.hydraulic_pressure_bar,
           s.fuel_level_pct, s.engine_hours, s.last_ts, s.last_received_at,
           coalesce(s.last_received_at > now() - make_interval(secs => $offline_after_s), false)
               AND NOT coalesce(NOT p.connected AND p.status_at >= s.last_received_at, false) AS online,
           coalesce(a.active_alarms, 0) AS active_alarms, a.worst_severity
    FROM equipment e
    LEFT JOIN equipment_state s ON s.equipment_id = e.id
    LEFT JOIN device_presence p ON p.equipment_id = e.id
    LEFT JOIN (
        SELECT equipment_id, count(*) AS active_alarms,
               (ARRAY[{quoted(SEVERITIES)}])[min({severity_rank('severity')})] AS worst_severity
        FROM alarms
        WHERE state = 'active' AND fault_code NOT IN ({quoted(NOT_ALARM_STATE_FAULTS)})
        GROUP BY equipment_id
    ) a ON a.equipment_id = e.id
    WHERE {where}
), fleet AS (
    SELECT m.*,
           CASE WHEN m.active_alarms > 0 THEN '{STATE_IN_ALARM}'
                WHEN NOT m.online THEN '{STATE_OFFLINE}'
                WHEN m.engine_rpm > {WORKING_RPM!r} THEN '{STATE_WORKING}'
                ELSE '{STATE_IDLE}' END AS state
    FROM machines m
)"""
