"""Alarm console: what is wrong now across the fleet, worst first, and what happened recently.

Acknowledging an alarm is not in the API yet; each alarm links to the API's alarms of its machine,
to its work order, and to the API docs' form for opening a work order (POST /api/v1/tickets).
"""

from __future__ import annotations

from dashboards.common import (
    ALARMS_UID,
    api_alarms_link,
    api_open_ticket_link,
    api_ticket_link,
    api_url_variable,
    customer_variable,
    machine_link,
    severity_bars,
)
from dashboards.model import (
    CustomVariable,
    Dashboard,
    Panel,
    Query,
    Row,
    override,
    stat_options,
    table_options,
    thresholds,
    value_colors,
)
from dashboards.sql import ALL_VALUE, SEVERITIES, SEVERITY_COLORS, any_of, severity_rank

FILTER = f"{any_of('customer', 'e.customer')} AND {any_of('severity', 'a.severity')}"

_ALARM_COLUMNS = """a.id AS "alarm", a.raised_at AS "raised", a.severity, a.fault_code AS "fault",
       coalesce(f.title, f.diagnosis ->> 'title') AS "what",
       a.equipment_id, e.customer, e.model, e.site, a.occurrences,
       f.diagnosis -> 'causes' -> 0 ->> 'title' AS "most probable cause",
       (f.diagnosis ->> 'remote_resolvable')::boolean AS "remote fix likely",
       a.ticket_id AS "ticket\""""


def _alarm_overrides() -> list[dict]:
    return [
        override("alarm", ("links", [api_alarms_link(), api_open_ticket_link()]), ("custom.width", 70)),
        override("equipment_id", ("displayName", "machine"), ("links", [machine_link(), api_alarms_link()])),
        override("severity", ("mappings", value_colors(SEVERITY_COLORS)),
                 ("custom.cellOptions", {"type": "color-background"}), ("custom.width", 90)),
        override("ticket", ("links", [api_ticket_link("ticket")]), ("custom.width", 70)),
        override("raised", ("unit", "dateTimeAsIso")),
    ]


def severity_stats() -> Panel:
    columns = ",\n       ".join(f"count(*) FILTER (WHERE a.severity = '{s}') AS \"{s}\"" for s in SEVERITIES)
    return Panel(
        "stat", "Active alarms by severity", [Query(f"""
SELECT {columns},
       count(*) FILTER (WHERE a.ticket_id IS NULL) AS "without work order"
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
WHERE a.state = 'active' AND {FILTER}""")],
        width=24, height=4,
        description="'without work order': the alarms worker has not (yet) opened or linked a ticket; "
                    "see the ticket error in the table below.",
        options=stat_options(),
        defaults={"color": {"mode": "thresholds"}, "thresholds": thresholds("green", (1, "red")), "unit": "none"},
        overrides=[*(override(s, ("thresholds", thresholds("green", (1, c)))) for s, c in SEVERITY_COLORS.items()),
                   override("without work order", ("thresholds", thresholds("green", (1, "orange"))))],
    )


def active_alarms() -> Panel:
    return Panel(
        "table", "Active alarms", [Query(f"""
SELECT {_ALARM_COLUMNS},
       extract(epoch FROM now() - a.raised_at) AS "age",
       a.ticket_error AS "ticket error"
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
LEFT JOIN faults f ON f.id = a.last_fault_id
WHERE a.state = 'active' AND {FILTER}
ORDER BY {severity_rank('a.severity')}, a.raised_at""")],
        width=24, height=12,
        description="Every active alarm, worst and oldest first (click a column header to sort). Links: the "
                    "machine's drill-down, its alarms in the API, its work order, and the API form to open one.",
        options=table_options(),
        defaults={"custom": {"align": "auto", "filterable": True, "cellOptions": {"type": "auto"}}},
        overrides=[*_alarm_overrides(), override("age", ("unit", "s"))],
    )


def recent_alarms() -> Panel:
    return Panel(
        "table", "Alarms raised in the time range", [Query(f"""
SELECT {_ALARM_COLUMNS},
       a.state, a.cleared_at AS "cleared",
       extract(epoch FROM coalesce(a.cleared_at, now()) - a.raised_at) AS "lasted"
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
LEFT JOIN faults f ON f.id = a.last_fault_id
WHERE $__timeFilter(a.raised_at) AND {FILTER}
ORDER BY a.raised_at DESC
LIMIT 1000""")],
        width=24, height=10,
        options=table_options(),
        defaults={"custom": {"align": "auto", "filterable": True, "cellOptions": {"type": "auto"}}},
        overrides=[*_alarm_overrides(), override("cleared", ("unit", "dateTimeAsIso")),
                   override("lasted", ("unit", "s"))],
    )


def raised_over_time() -> Panel:
    return severity_bars("Alarms raised", f"""
SELECT $__timeGroupAlias(a.raised_at, $__interval),
       a.severity AS metric,
       count(*) AS value
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
WHERE $__timeFilter(a.raised_at) AND {FILTER}
GROUP BY 1, 2
ORDER BY 1, 2""")


def top_faults() -> Panel:
    return Panel(
        "barchart", "Most frequent faults in the time range", [Query(f"""
SELECT a.fault_code AS "fault", count(*) AS "alarms", count(DISTINCT a.equipment_id) AS "machines"
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
WHERE $__timeFilter(a.raised_at) AND {FILTER}
GROUP BY a.fault_code
ORDER BY 2 DESC, 1
LIMIT 10""")],
        width=12, height=8,
        options={"xField": "fault", "orientation": "horizontal", "stacking": "none", "showValue": "auto",
                 "barWidth": 0.8, "groupWidth": 0.7, "xTickLabelRotation": 0,
                 "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                 "tooltip": {"mode": "multi", "sort": "none"}},
        defaults={"color": {"mode": "palette-classic"}, "custom": {"fillOpacity": 85, "lineWidth": 0}},
    )


def dashboard() -> Dashboard:
    return Dashboard(
        uid=ALARMS_UID,
        title="IronSight · Alarm console",
        description="Active and recent alarms across the fleet, with links to the machine and the API.",
        variables=[customer_variable(multi=True),
                   CustomVariable("severity", "Severity", SEVERITIES, include_all=True, multi=True,
                                  all_value=ALL_VALUE),
                   api_url_variable()],
        time_from="now-24h",
        refresh="10s",
        tags=("alarms",),
        panels=[severity_stats(), active_alarms(), Row("History"), recent_alarms(), raised_over_time(),
                top_faults()],
    )
