"""Alarm console: what is wrong now across the fleet, worst first, and what happened recently.

Acknowledging an alarm is not in the API yet; each alarm links to the API's alarms of its machine,
to its work order, and to the API docs' form for opening a work order (POST /api/v1/tickets).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Row
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

from dashboards import blocks, props
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
from dashboards.sql import ALL_VALUE, SEVERITIES, SEVERITY_COLORS, any_of, severity_rank

FILTER = f"{any_of('customer', 'e.customer')} AND {any_of('severity', 'a.severity')}"

_ALARM_COLUMNS = """a.id AS "alarm", a.raised_at AS "raised", a.severity, a.fault_code AS "fault",
       coalesce(f.title, f.diagnosis ->> 'title') AS "what",
       a.equipment_id, e.customer, e.model, e.site, a.occurrences,
       f.diagnosis -> 'causes' -> 0 ->> 'title' AS "most probable cause",
       (f.diagnosis ->> 'remote_resolvable')::boolean AS "remote fix likely",
       a.ticket_id AS "ticket\""""


def _alarm_columns(panel: table.Panel) -> table.Panel:
    return (
        panel
        .override_by_name("alarm", [props.links(api_alarms_link(), api_open_ticket_link()), props.width(70)])
        .override_by_name("equipment_id", [props.display_name("machine"),
                                           props.links(machine_link(), api_alarms_link())])
        .override_by_name("severity", [props.value_colors(SEVERITY_COLORS), props.color_background(), props.width(90)])
        .override_by_name("ticket", [props.links(api_ticket_link("ticket")), props.width(70)])
        .override_by_name("raised", [props.unit("dateTimeAsIso")])
    )


def severity_stats() -> stat.Panel:
    columns = ",\n       ".join(f"count(*) FILTER (WHERE a.severity = '{s}') AS \"{s}\"" for s in SEVERITIES)
    panel = (
        blocks.stat_panel("Active alarms by severity", f"""
SELECT {columns},
       count(*) FILTER (WHERE a.ticket_id IS NULL) AS "without work order"
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
WHERE a.state = 'active' AND {FILTER}""", width=24, height=4,
                          description="'without work order': the alarms worker has not (yet) opened or linked a "
                                      "ticket; see the ticket error in the table below.")
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("green", (1, "red")))
        .unit("none")
    )
    for severity, color in SEVERITY_COLORS.items():
        panel.override_by_name(severity, [props.thresholds("green", (1, color))])
    return panel.override_by_name("without work order", [props.thresholds("green", (1, "orange"))])


def active_alarms() -> table.Panel:
    return _alarm_columns(blocks.table_panel("Active alarms", f"""
SELECT {_ALARM_COLUMNS},
       extract(epoch FROM now() - a.raised_at) AS "age",
       a.ticket_error AS "ticket error"
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
LEFT JOIN faults f ON f.id = a.last_fault_id
WHERE a.state = 'active' AND {FILTER}
ORDER BY {severity_rank('a.severity')}, a.raised_at""", width=24, height=12, filterable=True,
        description="Every active alarm, worst and oldest first (click a column header to sort). Links: the "
                    "machine's drill-down, its alarms in the API, its work order, and the API form to open one.")
    ).override_by_name("age", [props.unit("s")])


def recent_alarms() -> table.Panel:
    return _alarm_columns(blocks.table_panel("Alarms raised in the time range", f"""
SELECT {_ALARM_COLUMNS},
       a.state, a.cleared_at AS "cleared",
       extract(epoch FROM coalesce(a.cleared_at, now()) - a.raised_at) AS "lasted"
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
LEFT JOIN faults f ON f.id = a.last_fault_id
WHERE $__timeFilter(a.raised_at) AND {FILTER}
ORDER BY a.raised_at DESC
LIMIT 1000""", width=24, height=10, filterable=True)
    ).override_by_name("cleared", [props.unit("dateTimeAsIso")]).override_by_name("lasted", [props.unit("s")])


def raised_over_time() -> timeseries.Panel:
    return severity_bars("Alarms raised", f"""
SELECT $__timeGroupAlias(a.raised_at, $__interval),
       a.severity AS metric,
       count(*) AS value
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
WHERE $__timeFilter(a.raised_at) AND {FILTER}
GROUP BY 1, 2
ORDER BY 1, 2""")


def top_faults() -> barchart.Panel:
    return blocks.barchart_panel("Most frequent faults in the time range", f"""
SELECT a.fault_code AS "fault", count(*) AS "alarms", count(DISTINCT a.equipment_id) AS "machines"
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
WHERE $__timeFilter(a.raised_at) AND {FILTER}
GROUP BY a.fault_code
ORDER BY 2 DESC, 1
LIMIT 10""", x_field="fault", stacking=common_model.StackingMode.NONE, width=12, height=8)


def dashboard() -> dashboard_model.Dashboard:
    return blocks.make_dashboard(
        ALARMS_UID,
        "IronSight · Alarm console",
        "Active and recent alarms across the fleet, with links to the machine and the API.",
        variables=[customer_variable(multi=True),
                   blocks.custom_variable("severity", "Severity", SEVERITIES, include_all=True, multi=True,
                                          all_value=ALL_VALUE),
                   api_url_variable()],
        time_from="now-24h",
        refresh="10s",
        tags=("alarms",),
        panels=[severity_stats(), active_alarms(), Row("History"), recent_alarms(), raised_over_time(),
                top_faults()],
    )
