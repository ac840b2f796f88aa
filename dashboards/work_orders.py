"""Work orders: open tickets by state and age, the list to work through, and what happened to them.

Covers what the tickets package keeps today (tickets, their history and linked alarms). The service
loop (dispatch, engineers and vehicles, SLA timers, callback surveys, KPIs) is not built yet; the
age bands below stand in for the usual promises (respond within 4 h, resolve within 24 h) until
tickets carry their own time limits. docs/dashboards.md lists what comes with the loop.
"""

from __future__ import annotations

from dashboards.common import (
    WORK_ORDERS_UID,
    api_ticket_link,
    api_url_variable,
    customer_variable,
    machine_link,
    severity_bars,
)
from dashboards.model import (
    Dashboard,
    Panel,
    Query,
    QueryVariable,
    Row,
    fixed_color,
    override,
    stat_options,
    table_options,
    thresholds,
    value_colors,
)
from dashboards.sql import ALL_VALUE, OPEN_TICKET, SEVERITIES, SEVERITY_COLORS, any_of, severity_rank

# Typical promises of a service organisation; the age bands of open work orders.
RESPOND_WITHIN_H = 4
RESOLVE_WITHIN_H = 24

FILTER = f"{any_of('customer', 'e.customer')} AND {any_of('state', 't.state')}"


def open_stats() -> Panel:
    age = "now() - t.created_at"
    return Panel(
        "stat", "Open work orders by age", [Query(f"""
SELECT count(*) AS "open",
       count(*) FILTER (WHERE {age} < interval '{RESPOND_WITHIN_H} hours') AS "under {RESPOND_WITHIN_H} h",
       count(*) FILTER (WHERE {age} >= interval '{RESPOND_WITHIN_H} hours'
                          AND {age} < interval '{RESOLVE_WITHIN_H} hours') AS "{RESPOND_WITHIN_H}–{RESOLVE_WITHIN_H} h",
       count(*) FILTER (WHERE {age} >= interval '{RESOLVE_WITHIN_H} hours') AS "over {RESOLVE_WITHIN_H} h",
       count(*) FILTER (WHERE t.remote_resolvable) AS "remote fix likely",
       coalesce(extract(epoch FROM max({age})), 0) AS "oldest"
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
WHERE {OPEN_TICKET} AND {FILTER}""")],
        width=24, height=4,
        description=f"Open work orders by age: under {RESPOND_WITHIN_H} h, {RESPOND_WITHIN_H} to "
                    f"{RESOLVE_WITHIN_H} h, and past {RESOLVE_WITHIN_H} h (the usual promises to respond and "
                    "to resolve). 'remote fix likely': the diagnosis expects the customer can fix it with "
                    "the dispatcher on the phone.",
        options=stat_options(),
        defaults={"color": fixed_color("blue"), "unit": "none"},
        overrides=[override(f"{RESPOND_WITHIN_H}–{RESOLVE_WITHIN_H} h", ("color", {"mode": "thresholds"}),
                            ("thresholds", thresholds("green", (1, "orange")))),
                   override(f"over {RESOLVE_WITHIN_H} h", ("color", {"mode": "thresholds"}),
                            ("thresholds", thresholds("green", (1, "red")))),
                   override("oldest", ("unit", "s"), ("color", {"mode": "thresholds"}),
                            ("thresholds", thresholds("green", (RESPOND_WITHIN_H * 3600, "orange"),
                                                      (RESOLVE_WITHIN_H * 3600, "red"))))],
    )


def by_state() -> Panel:
    columns = ",\n       ".join(f"count(*) FILTER (WHERE t.priority = '{p}') AS \"{p}\"" for p in SEVERITIES)
    return Panel(
        "barchart", "Work orders by state and priority (opened in the time range, or still open)", [Query(f"""
SELECT t.state,
       {columns}
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
WHERE ($__timeFilter(t.created_at) OR {OPEN_TICKET}) AND {FILTER}
GROUP BY t.state
ORDER BY t.state""")],
        width=12, height=8,
        options={"xField": "state", "orientation": "horizontal", "stacking": "normal", "showValue": "auto",
                 "barWidth": 0.8, "groupWidth": 0.7, "xTickLabelRotation": 0,
                 "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                 "tooltip": {"mode": "multi", "sort": "none"}},
        defaults={"color": {"mode": "palette-classic"}, "custom": {"fillOpacity": 85, "lineWidth": 0}},
        overrides=[override(p, ("color", fixed_color(c))) for p, c in SEVERITY_COLORS.items()],
    )


def opened_over_time() -> Panel:
    return severity_bars("Work orders opened", f"""
SELECT $__timeGroupAlias(t.created_at, $__interval),
       t.priority AS metric,
       count(*) AS value
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
WHERE $__timeFilter(t.created_at) AND {FILTER}
GROUP BY 1, 2
ORDER BY 1, 2""")


def open_list() -> Panel:
    return Panel(
        "table", "Open work orders", [Query(f"""
SELECT t.id AS "ticket", t.created_at AS "opened", extract(epoch FROM now() - t.created_at) AS "age",
       t.priority, t.state, t.equipment_id, e.customer, e.model, e.site, t.title,
       t.fault_code AS "fault",
       t.diagnosis -> 'causes' -> 0 ->> 'title' AS "most probable cause",
       t.remote_resolvable AS "remote fix likely",
       t.diagnosis ->> 'spare_part' AS "spare part",
       (SELECT count(*) FROM ticket_alarms ta WHERE ta.ticket_id = t.id) AS "alarms",
       (SELECT count(*) FROM alarms a WHERE a.ticket_id = t.id AND a.state = 'active') AS "alarms active"
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
WHERE {OPEN_TICKET} AND {FILTER}
ORDER BY {severity_rank('t.priority')}, t.created_at""")],
        width=24, height=12,
        description="Every open work order, highest priority and oldest first: the machine, what the "
                    "diagnosis suggests, and the spare part a visit would need.",
        options=table_options(),
        defaults={"custom": {"align": "auto", "filterable": True, "cellOptions": {"type": "auto"}}},
        overrides=[
            override("ticket", ("links", [api_ticket_link("ticket")]), ("custom.width", 70)),
            override("equipment_id", ("displayName", "machine"), ("links", [machine_link()])),
            override("opened", ("unit", "dateTimeAsIso")),
            override("age", ("unit", "s"), ("color", {"mode": "thresholds"}),
                     ("custom.cellOptions", {"type": "color-text"}),
                     ("thresholds", thresholds("green", (RESPOND_WITHIN_H * 3600, "orange"),
                                               (RESOLVE_WITHIN_H * 3600, "red")))),
            override("priority", ("mappings", value_colors(SEVERITY_COLORS)),
                     ("custom.cellOptions", {"type": "color-background"}), ("custom.width", 90)),
        ],
    )


def history() -> Panel:
    return Panel(
        "table", "Work order history in the time range", [Query(f"""
SELECT ev.at, ev.ticket_id AS "ticket", t.equipment_id, e.customer, ev.actor, ev.event,
       ev.detail::text AS "detail"
FROM ticket_events ev
JOIN tickets t ON t.id = ev.ticket_id
JOIN equipment e ON e.id = t.equipment_id
WHERE $__timeFilter(ev.at) AND {FILTER}
ORDER BY ev.at DESC, ev.id DESC
LIMIT 1000""")],
        width=24, height=8,
        options=table_options(),
        overrides=[override("ticket", ("links", [api_ticket_link("ticket")])),
                   override("equipment_id", ("displayName", "machine"), ("links", [machine_link()])),
                   override("at", ("unit", "dateTimeAsIso"))],
    )


def dashboard() -> Dashboard:
    return Dashboard(
        uid=WORK_ORDERS_UID,
        title="IronSight · Work orders",
        description="Open work orders by state, priority and age; the list to work through; their history.",
        variables=[customer_variable(multi=True),
                   QueryVariable("state", "State", "SELECT DISTINCT state FROM tickets ORDER BY 1",
                                 include_all=True, multi=True, all_value=ALL_VALUE),
                   api_url_variable()],
        time_from="now-7d",
        refresh="1m",
        tags=("work orders",),
        panels=[open_stats(), by_state(), opened_over_time(), open_list(), Row("History"), history()],
    )
