"""Work orders: open tickets against their own time limits, the list to work through, the service
vans on the map with the visits they are on, parts stock, the service KPIs and callback scores of
the time range, after the repair (the callback queue, complaints against their deadlines, and how
well both kept time over the last 30 days), and what happened to every order.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, geomap, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Row
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

from dashboards import blocks, props
from dashboards.common import (
    WORK_ORDERS_UID,
    api_ticket_link,
    api_url_variable,
    customer_variable,
    machine_link,
    severity_bars,
)
from dashboards.sql import (
    ALL_VALUE,
    OPEN_TICKET,
    SEVERITIES,
    SEVERITY_COLORS,
    SURVEY_INDICATORS,
    any_of,
    quoted,
    severity_rank,
)

# Typical promises of a service organisation; the age bands of open work orders.
RESPOND_WITHIN_H = 4
RESOLVE_WITHIN_H = 24

CUSTOMER_FILTER = any_of("customer", "e.customer")
FILTER = f"{CUSTOMER_FILTER} AND {any_of('state', 't.state')}"

# tickets.kpis.COMPLAINT_WEEK (dashboards import only core; a test keeps the two equal).
COMPLAINT_WEEK_DAYS = 7
# The after-the-repair figures look back this far, whatever the time range: a month's callbacks and
# complaints are what the call centre and the departments answer for.
LOOK_BACK_DAYS = 30
# Complaints in management's hands (tickets.kpis.COMPLAINT_MANAGEMENT_STATES; a test keeps them equal).
COMPLAINT_MANAGEMENT_STATES = ("escalated", "closed")


def open_stats() -> stat.Panel:
    return (
        blocks.stat_panel("Open work orders and their time limits", f"""
SELECT count(*) AS "open",
       count(*) FILTER (WHERE t.responded_at IS NULL AND t.respond_by < now()) AS "response overdue",
       count(*) FILTER (WHERE t.state IN ('dispatched', 'en_route') AND t.arrive_by < now()) AS "arrival overdue",
       count(*) FILTER (WHERE t.resolved_at IS NULL AND t.resolve_by < now()) AS "resolution overdue",
       count(*) FILTER (WHERE t.state IN ('dispatched', 'en_route') AND t.late_warned_at IS NOT NULL)
           AS "vans running late",
       count(*) FILTER (WHERE t.remote_resolvable) AS "remote fix likely",
       coalesce(extract(epoch FROM max(now() - t.created_at)), 0) AS "oldest"
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
WHERE {OPEN_TICKET} AND {FILTER}""", width=24, height=4,
                          description="Open work orders and how many are past a time limit of their customer's "
                                      "contract: the response (accepted), the arrival promised at dispatch, the "
                                      "resolution; vans whose tracked ETA has passed the promised arrival; orders the "
                                      "diagnosis expects to be fixed with the customer on the phone.")
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("green", (1, "red")))
        .unit("none")
        .override_by_name("open", [props.color("blue")])
        .override_by_name("remote fix likely", [props.color("blue")])
        .override_by_name("vans running late", [props.thresholds("green", (1, "orange"))])
        .override_by_name("oldest", [props.unit("s"), props.color("blue")])
    )


def by_state() -> barchart.Panel:
    columns = ",\n       ".join(f"count(*) FILTER (WHERE t.priority = '{p}') AS \"{p}\"" for p in SEVERITIES)
    panel = blocks.barchart_panel(
        "Work orders by state and priority (opened in the time range, or still open)", f"""
SELECT t.state,
       {columns}
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
WHERE ($__timeFilter(t.created_at) OR {OPEN_TICKET}) AND {FILTER}
GROUP BY t.state
ORDER BY t.state""", x_field="state", stacking=common_model.StackingMode.NORMAL, width=12, height=8)
    for priority, color in SEVERITY_COLORS.items():
        panel.override_by_name(priority, [props.color(color)])
    return panel


def opened_over_time() -> timeseries.Panel:
    return severity_bars("Work orders opened", f"""
SELECT $__timeGroupAlias(t.created_at, $__interval),
       t.priority AS metric,
       count(*) AS value
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
WHERE $__timeFilter(t.created_at) AND {FILTER}
GROUP BY 1, 2
ORDER BY 1, 2""")


def open_list() -> table.Panel:
    return (
        blocks.table_panel("Open work orders", f"""
SELECT t.id AS "ticket", t.created_at AS "opened", extract(epoch FROM now() - t.created_at) AS "age",
       t.priority, t.state, t.equipment_id, e.customer, e.model, e.site, t.title, t.engineer,
       extract(epoch FROM least(CASE WHEN t.responded_at IS NULL THEN t.respond_by END,
                                CASE WHEN t.state IN ('dispatched', 'en_route') THEN t.arrive_by END,
                                CASE WHEN t.resolved_at IS NULL THEN t.resolve_by END) - now()) AS "next limit in",
       t.fault_code AS "fault",
       t.diagnosis -> 'causes' -> 0 ->> 'title' AS "most probable cause",
       t.remote_resolvable AS "remote fix likely",
       t.diagnosis ->> 'spare_part' AS "spare part",
       (SELECT count(*) FROM ticket_alarms ta WHERE ta.ticket_id = t.id) AS "alarms",
       (SELECT count(*) FROM alarms a WHERE a.ticket_id = t.id AND a.state = 'active') AS "alarms active"
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
WHERE {OPEN_TICKET} AND {FILTER}
ORDER BY {severity_rank('t.priority')}, t.created_at""", width=24, height=12, filterable=True,
                           description="Every open work order, highest priority and oldest first: the machine, who "
                                       "holds it, the time left to its next limit (negative: overdue), what the "
                                       "diagnosis suggests, and the spare part a visit would need.")
        .override_by_name("ticket", [props.links(api_ticket_link("ticket")), props.width(70)])
        .override_by_name("equipment_id", [props.display_name("machine"), props.links(machine_link())])
        .override_by_name("opened", [props.unit("dateTimeAsIso")])
        .override_by_name("next limit in", [props.unit("s"), props.threshold_colors(), props.color_text(),
                                            props.thresholds("red", (0, "orange"), (3600, "green"))])
        .override_by_name("age", [props.unit("s"), props.threshold_colors(), props.color_text(),
                                  props.thresholds("green", (RESPOND_WITHIN_H * 3600, "orange"),
                                                   (RESOLVE_WITHIN_H * 3600, "red"))])
        .override_by_name("priority", [props.value_colors(SEVERITY_COLORS), props.color_background(),
                                       props.width(90)])
    )


VAN_STATES = {"free": "green", "driving": "blue", "on site": "purple", "late": "orange"}


def vans_map() -> geomap.Panel:
    return (
        blocks.geomap_panel("Service vans and the machines they are sent to", [f"""
SELECT 'van' AS kind, v.id AS name, v.engineer_id AS engineer, v.lat, v.lon,
       CASE WHEN t.id IS NULL THEN 'free' WHEN t.state = 'on_site' THEN 'on site'
            WHEN t.late_warned_at IS NOT NULL THEN 'late' ELSE 'driving' END AS status,
       t.id AS ticket, t.equipment_id, t.eta, v.reported_at AS "last position"
FROM vehicles v
LEFT JOIN tickets t ON t.vehicle_id = v.id AND t.state IN ('dispatched', 'en_route', 'on_site')
WHERE v.lat IS NOT NULL
UNION ALL
SELECT 'machine', t.equipment_id, t.engineer, st.lat, st.lon,
       CASE WHEN t.state = 'on_site' THEN 'on site' ELSE 'waiting for a visit' END,
       t.id, t.equipment_id, t.eta, st.last_ts
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
JOIN equipment_state st ON st.equipment_id = t.equipment_id
WHERE t.state IN ('accepted', 'remote_diagnosis', 'dispatched', 'en_route', 'on_site')
  AND st.lat IS NOT NULL AND {FILTER}
ORDER BY 1 DESC, 2"""],
                            [blocks.markers_layer("Vans and machines", color_field="status", size=8,
                                                  text_field="name")],
                            width=14, height=14,
                            description="Every service van at its last reported position (free, driving to a visit, "
                                        "late against the promised arrival, on site) and every machine with a work "
                                        "order waiting for or receiving a visit.")
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("red"))
        .override_by_name("status", [props.value_colors(VAN_STATES | {"waiting for a visit": "red"})])
        .override_by_name("ticket", [props.links(api_ticket_link("ticket"))])
    )


def visits() -> table.Panel:
    return (
        blocks.table_panel("Visits in progress", f"""
SELECT t.id AS "ticket", t.priority, t.state, t.equipment_id, e.customer, t.engineer, t.vehicle_id AS "van",
       t.required_part AS "part", t.pickup_warehouse_id AS "collect at",
       t.part_picked_up_at IS NOT NULL OR t.pickup_warehouse_id IS NULL AS "part on board",
       t.eta, t.arrive_by AS "promised", extract(epoch FROM t.eta - t.arrive_by) AS "late by"
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
WHERE t.state IN ('dispatched', 'en_route', 'on_site') AND {FILTER}
ORDER BY {severity_rank('t.priority')}, t.dispatched_at""", width=10, height=14,
                           description="Dispatched visits: who drives, the part and where it is collected, the ETA "
                                       "from the van's last position against the promised arrival.")
        .override_by_name("ticket", [props.links(api_ticket_link("ticket")), props.width(70)])
        .override_by_name("equipment_id", [props.display_name("machine"), props.links(machine_link())])
        .override_by_name("eta", [props.unit("dateTimeAsIso")])
        .override_by_name("promised", [props.unit("dateTimeAsIso")])
        .override_by_name("late by", [props.unit("s"), props.threshold_colors(), props.color_text(),
                                      props.thresholds("green", (0, "orange"))])
    )


def parts_stock() -> table.Panel:
    return (
        blocks.table_panel("Spare parts stock", """
SELECT part,
       coalesce(sum(quantity) FILTER (WHERE place_kind = 'warehouse'), 0) AS "in warehouses",
       coalesce(sum(quantity) FILTER (WHERE place_kind = 'vehicle'), 0) AS "in vans",
       count(*) FILTER (WHERE place_kind = 'warehouse' AND quantity > 0) AS "warehouses holding it"
FROM part_stock
GROUP BY part
ORDER BY 2, part""", width=10, height=9,
                           description="Stock of each part on the warehouses' shelves and in the vans; a part no "
                                       "warehouse holds sends engineers further, or without it.")
        .override_by_name("in warehouses", [props.threshold_colors(), props.color_text(),
                                            props.thresholds("red", (1, "orange"), (3, "green"))])
    )


def service_kpis() -> stat.Panel:
    return (
        blocks.stat_panel("Service KPIs of the work orders opened in the time range", f"""
SELECT count(*) AS "work orders",
       count(*) FILTER (WHERE t.resolution = 'remote')::float8
           / nullif(count(*) FILTER (WHERE t.resolved_at IS NOT NULL), 0) AS "remote resolution",
       count(*) FILTER (WHERE t.resolution = 'on_site' AND t.first_time_fix)::float8
           / nullif(count(*) FILTER (WHERE t.resolution = 'on_site'), 0) AS "first-time fix",
       count(*) FILTER (WHERE t.responded_at <= t.respond_by)::float8
           / nullif(count(*) FILTER (WHERE t.responded_at IS NOT NULL OR t.respond_by <= now()), 0)
           AS "responded in time",
       count(*) FILTER (WHERE t.arrived_at <= t.arrive_by)::float8
           / nullif(count(*) FILTER (WHERE t.arrived_at IS NOT NULL OR t.arrive_by <= now()), 0)
           AS "arrived in time",
       count(*) FILTER (WHERE t.resolved_at <= t.resolve_by)::float8
           / nullif(count(*) FILTER (WHERE t.resolved_at IS NOT NULL OR t.resolve_by <= now()), 0)
           AS "resolved in time",
       avg(extract(epoch FROM t.resolved_at - t.created_at)) AS "mean time to resolve"
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
WHERE $__timeFilter(t.created_at) AND {FILTER}""", width=14, height=5,
                          description="The service promises over the orders opened in the range (the API's GET "
                                      "/api/v1/kpis gives the same with p90s, per customer, engineer or station): "
                                      "share resolved remotely, first-time fixes among visits, each time limit met, "
                                      "mean time from opening to resolution.")
        .unit("percentunit")
        .decimals(0)
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("red", (0.8, "orange"), (0.95, "green")))
        .override_by_name("work orders", [props.unit("none"), props.color("blue")])
        .override_by_name("remote resolution", [props.thresholds("orange", (0.6, "green"))])
        .override_by_name("mean time to resolve", [props.unit("s"), props.decimals(1), props.color("blue")])
    )


def survey_scores() -> stat.Panel:
    columns = ",\n       ".join(f"avg(s.{i})::float8 AS \"{i.replace('_', ' ')}\"" for i in SURVEY_INDICATORS)
    return (
        blocks.stat_panel("Callback survey (1–5) of the work orders opened in the time range", f"""
SELECT count(*) AS "callbacks",
       count(*) FILTER (WHERE least({', '.join('s.' + i for i in SURVEY_INDICATORS)}) <= 2) AS "complaints",
       {columns}
FROM ticket_surveys s
JOIN tickets t ON t.id = s.ticket_id
JOIN equipment e ON e.id = t.equipment_id
WHERE s.round = 1 AND $__timeFilter(t.created_at) AND {FILTER}""", width=14, height=4,
                          description="Mean score of each indicator at the first callback, and how many callbacks "
                                      "opened a complaint (a score of 2 or less).")
        .decimals(1)
        .min(1)
        .max(5)
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("red", (3, "orange"), (4, "green")))
        .override_by_name("callbacks", [props.decimals(0), props.color("blue")])
        .override_by_name("complaints", [props.decimals(0), props.thresholds("green", (1, "orange"))])
    )


def callbacks_on_time() -> stat.Panel:
    return (
        blocks.stat_panel(f"Callbacks due in the last {LOOK_BACK_DAYS} days", f"""
SELECT count(*) FILTER (WHERE c.state = 'done' AND c.done_at <= c.due_at)::float8
           / nullif(count(*) FILTER (WHERE c.state IN ('done', 'unreachable')
                                     OR (c.state = 'open' AND c.due_at < now())), 0) AS "done on time",
       count(*) AS "due",
       count(*) FILTER (WHERE c.state = 'open' AND c.due_at < now()) AS "overdue now",
       count(*) FILTER (WHERE c.state = 'unreachable') AS "unreachable"
FROM callbacks c
JOIN tickets t ON t.id = c.ticket_id
JOIN equipment e ON e.id = t.equipment_id
WHERE c.due_at >= now() - interval '{LOOK_BACK_DAYS} days' AND c.due_at < now() AND {CUSTOMER_FILTER}""",
                          width=12, height=4,
                          description="Of the callbacks (surveys after a repair, checks after a department's "
                                      "answer) due in the last 30 days, the share done by their due time among those "
                                      "done, unreachable or still open past it (GET /api/v1/kpis: callbacks).")
        .unit("none")
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("blue"))
        .override_by_name("done on time", [props.unit("percentunit"), props.decimals(0),
                                           props.thresholds("red", (0.8, "orange"), (0.95, "green"))])
        .override_by_name("overdue now", [props.thresholds("green", (1, "red"))])
        .override_by_name("unreachable", [props.thresholds("green", (1, "orange"))])
    )


def complaints_within_the_week() -> stat.Panel:
    week = f"interval '{COMPLAINT_WEEK_DAYS} days'"
    return (
        blocks.stat_panel(f"Complaints opened in the last {LOOK_BACK_DAYS} days", f"""
SELECT count(*) FILTER (WHERE c.closed_at - c.opened_at <= {week})::float8
           / nullif(count(*) FILTER (WHERE c.closed_at IS NOT NULL OR c.opened_at + {week} <= now()), 0)
           AS "closed within the week",
       count(*) AS "opened",
       count(*) FILTER (WHERE c.closed_at IS NULL) AS "still open",
       count(*) FILTER (WHERE c.round > 1) AS "sent back",
       count(*) FILTER (WHERE c.state IN ({quoted(COMPLAINT_MANAGEMENT_STATES)})) AS "to management"
FROM complaints c
JOIN tickets t ON t.id = c.ticket_id
JOIN equipment e ON e.id = t.equipment_id
WHERE c.opened_at >= now() - interval '{LOOK_BACK_DAYS} days' AND {CUSTOMER_FILTER}""", width=12, height=4,
                          description="Of the complaints opened in the last 30 days, the share closed (the customer "
                                      "satisfied on the checking callback, or management) within 7 days, among those "
                                      "closed or a week old; how many were sent back to a department, and went to "
                                      "management (GET /api/v1/kpis: complaints).")
        .unit("none")
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("blue"))
        .override_by_name("closed within the week", [props.unit("percentunit"), props.decimals(0),
                                                     props.thresholds("red", (0.8, "orange"), (0.95, "green"))])
        .override_by_name("sent back", [props.thresholds("green", (1, "orange"))])
        .override_by_name("to management", [props.thresholds("green", (1, "red"))])
    )


def callback_queue() -> table.Panel:
    return (
        blocks.table_panel("Callback queue", f"""
SELECT c.ticket_id AS "ticket", t.equipment_id, e.customer, cc.name AS "contact",
       (SELECT string_agg(p.e164, ', ' ORDER BY p.e164) FROM contact_phones p WHERE p.contact_id = cc.id) AS "phone",
       c.purpose, c.due_at AS "due", extract(epoch FROM c.due_at - now()) AS "time left", c.attempts,
       c.next_attempt_at AS "next attempt", c.assigned_to AS "assigned to"
FROM callbacks c
JOIN tickets t ON t.id = c.ticket_id
JOIN equipment e ON e.id = t.equipment_id
LEFT JOIN customer_contacts cc ON cc.id = c.contact_id
WHERE c.state = 'open' AND {CUSTOMER_FILTER}
ORDER BY c.due_at, c.id""", width=24, height=9, filterable=True,
                           description="The callbacks to make, the soonest due first: the survey after a repair, or "
                                       "the check after a department answered a complaint; whom to call, the time "
                                       "left until it is due (negative: overdue by), the attempts so far and who has "
                                       "it.")
        .override_by_name("ticket", [props.links(api_ticket_link("ticket")), props.width(70)])
        .override_by_name("equipment_id", [props.display_name("machine"), props.links(machine_link())])
        .override_by_name("due", [props.unit("dateTimeAsIso")])
        .override_by_name("next attempt", [props.unit("dateTimeAsIso")])
        .override_by_name("time left", [props.unit("s"), props.threshold_colors(), props.color_text(),
                                        props.thresholds("red", (0, "orange"), (3600, "green"))])
        .override_by_name("attempts", [props.threshold_colors(), props.color_text(),
                                       props.thresholds("text", (3, "orange"))])
    )


def open_complaints() -> table.Panel:
    return (
        blocks.table_panel("Complaints against their deadlines", f"""
SELECT c.ticket_id AS "ticket", t.equipment_id, e.customer, c.department, c.state, c.round,
       c.answer_due AS "answer due",
       CASE WHEN c.state <> 'answered' THEN extract(epoch FROM c.answer_due - now()) END AS "time left",
       c.opened_at AS "opened", array_to_string(c.indicators, ', ') AS "scored low"
FROM complaints c
JOIN tickets t ON t.id = c.ticket_id
JOIN equipment e ON e.id = t.equipment_id
WHERE c.closed_at IS NULL AND {CUSTOMER_FILTER}
ORDER BY c.state = 'answered', c.answer_due, c.id""", width=24, height=8, filterable=True,
                           description="Open complaints, the most overdue first: the department (or management) "
                                       "that has to answer, the round (above 1: sent back by the customer), the time "
                                       "left to its answer (negative, and the row red: overdue). Answered ones wait "
                                       "for the checking callback in the queue above and come last.")
        .override_by_name("ticket", [props.links(api_ticket_link("ticket")), props.width(70)])
        .override_by_name("equipment_id", [props.display_name("machine"), props.links(machine_link())])
        .override_by_name("answer due", [props.unit("dateTimeAsIso")])
        .override_by_name("opened", [props.unit("dateTimeAsIso")])
        .override_by_name("round", [props.threshold_colors(), props.color_text(),
                                    props.thresholds("text", (2, "orange"))])
        .override_by_name("time left", [
            props.unit("s"), props.threshold_colors(), props.thresholds("red", (0, "transparent")),
            props.cell(common_model.TableColoredBackgroundCellOptions(apply_to_row=True))])
    )


def history() -> table.Panel:
    return (
        blocks.table_panel("Work order history in the time range", f"""
SELECT ev.at, ev.ticket_id AS "ticket", t.equipment_id, e.customer, ev.actor, ev.event,
       ev.detail::text AS "detail"
FROM ticket_events ev
JOIN tickets t ON t.id = ev.ticket_id
JOIN equipment e ON e.id = t.equipment_id
WHERE $__timeFilter(ev.at) AND {FILTER}
ORDER BY ev.at DESC, ev.id DESC
LIMIT 1000""", width=24, height=8)
        .override_by_name("ticket", [props.links(api_ticket_link("ticket"))])
        .override_by_name("equipment_id", [props.display_name("machine"), props.links(machine_link())])
        .override_by_name("at", [props.unit("dateTimeAsIso")])
    )


def dashboard() -> dashboard_model.Dashboard:
    return blocks.make_dashboard(
        WORK_ORDERS_UID,
        "IronSight · Work orders",
        "Open work orders against their time limits; the list to work through; service vans and visits; parts "
        "stock; service KPIs and callback scores; callbacks and complaints after the repair; the history.",
        variables=[customer_variable(multi=True),
                   blocks.query_variable("state", "State", "SELECT DISTINCT state FROM tickets ORDER BY 1",
                                         include_all=True, multi=True, all_value=ALL_VALUE),
                   api_url_variable()],
        time_from="now-7d",
        refresh="1m",
        tags=("work orders",),
        panels=[open_stats(), by_state(), opened_over_time(), open_list(), Row("Dispatch"), vans_map(), visits(),
                parts_stock(), Row("Service KPIs"), service_kpis(), survey_scores(), Row("After the repair"),
                callbacks_on_time(), complaints_within_the_week(), callback_queue(), open_complaints(),
                Row("History"), history()],
    )
