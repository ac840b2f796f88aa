"""Machine drill-down: one machine's live and historical signals, its diagnosis, track and work orders.

Long ranges are downsampled by Grafana's ``$__timeGroupAlias`` to ``$__interval`` (about one bucket
per pixel): a 90-day view of one machine reads its readings once and returns a few hundred rows.
When a rollup table exists (a continuous aggregate on TimescaleDB), the series queries move to it.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import geomap, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Row
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

from dashboards import blocks, props
from dashboards.common import (
    MACHINE_UID,
    api_alarms_link,
    api_open_ticket_link,
    api_ticket_link,
    api_url_variable,
    customer_variable,
    equipment_variable,
    offline_after_variable,
)
from dashboards.limits import limit_sql, next_service_sql
from dashboards.sql import OPEN_TICKET, SEVERITY_COLORS, STATE_COLORS, fleet_state, remedy_steps, severity_rank

MACHINE = "'$equipment'"
THIS_MACHINE = fleet_state(f"e.id = {MACHINE}")
# The machine's model's limits, as one row: CROSS JOIN it and take min() of a limit per bucket.
_LIMITS = (f"(SELECT {limit_sql('oil_temp_c', 'model')} AS oil_temp_c, "
           f"{limit_sql('coolant_temp_c', 'model')} AS coolant_temp_c, "
           f"{limit_sql('hydraulic_pressure_low_bar', 'model')} AS pressure_low_bar, "
           f"{limit_sql('hydraulic_pressure_spike_bar', 'model')} AS pressure_spike_bar "
           f"FROM equipment WHERE id = {MACHINE}) lim")


def now_stats() -> list[stat.Panel]:
    now = THIS_MACHINE + f"""
SELECT f.state,
       extract(epoch FROM now() - f.last_received_at) AS "last report",
       f.engine_hours AS "engine hours",
       {next_service_sql('f.engine_hours', 'e.last_service_hours')} - f.engine_hours AS "hours to service",
       f.fuel_level_pct AS "fuel",
       f.active_alarms AS "active alarms",
       (SELECT count(*) FROM tickets t WHERE t.equipment_id = f.equipment_id AND {OPEN_TICKET}) AS "open work orders"
FROM fleet f
JOIN equipment e ON e.id = f.equipment_id"""
    return [
        blocks.stat_panel("State", now, width=4, height=4, fields="/^state$/",
                          text_mode=common_model.BigValueTextMode.VALUE)
        .mappings(blocks.value_colors(STATE_COLORS))
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("text")),
        blocks.stat_panel("Now", now, width=20, height=4,
                          description="Seconds since the last report; engine hours and the hours left until the next "
                                      "scheduled service (negative: overdue); fuel; open alarms and work orders.",
                          fields="/^(last report|engine hours|hours to service|fuel|active alarms|open work orders)$/",
                          color_mode=common_model.BigValueColorMode.VALUE)
        .color_scheme(blocks.fixed_color("text"))
        .decimals(0)
        .override_by_name("last report", [props.unit("s"), props.threshold_colors(),
                                          props.thresholds("green", (60, "red"))])
        .override_by_name("engine hours", [props.unit("h"), props.decimals(1)])
        .override_by_name("hours to service", [props.unit("h"), props.decimals(1), props.threshold_colors(),
                                               props.thresholds("red", (0, "orange"), (10, "green"))])
        .override_by_name("fuel", [props.unit("percent"), props.threshold_colors(),
                                   props.thresholds("red", (10, "orange"), (20, "green"))])
        .override_by_name("active alarms", [props.threshold_colors(), props.thresholds("green", (1, "red"))]),
    ]


def _signal(title: str, column: str, unit: str, label: str, limits: tuple[tuple[str, str], ...] = (),
            description: str = "", width: int = 12) -> timeseries.Panel:
    limit_columns = "".join(f",\n       min(lim.{col}) AS \"{name}\"" for name, col in limits)
    source = f"readings r\nCROSS JOIN {_LIMITS}" if limits else "readings r"
    panel = (
        blocks.timeseries_panel(title, f"""
SELECT $__timeGroupAlias(r.ts, $__interval, NULL),
       avg(r.{column}) AS "{label}",
       max(r.{column}) AS "{label} (max)"{limit_columns}
FROM {source}
WHERE r.equipment_id = {MACHINE} AND $__timeFilter(r.ts)
GROUP BY 1
ORDER BY 1""", unit=unit, decimals=1, width=width, height=8, description=description)
        .override_by_name(f"{label} (max)", [props.fill_opacity(0), props.line_style("dot"), props.line_width(1)])
    )
    for name, col in limits:
        panel.override_by_name(name, props.dashed_limit("orange" if "spike" in col else "red"))
    return panel


def signals() -> list[timeseries.Panel]:
    bucket = "Averages per time bucket (dotted: the bucket's maximum)"
    return [
        _signal("Oil temperature", "oil_temp_c", "celsius", "oil", (("overheat limit", "oil_temp_c"),),
                f"{bucket}; dashed: the model's OIL_OVERHEAT limit."),
        _signal("Engine speed", "engine_rpm", "rpm", "rpm", (), bucket),
        _signal("Hydraulic pressure", "hydraulic_pressure_bar", "pressurebar", "pressure",
                (("low limit (working)", "pressure_low_bar"), ("spike limit", "pressure_spike_bar")),
                f"{bucket}; dashed: HYDRAULIC_PRESSURE_LOW (below, while working) and the spike level."),
        _signal("Coolant temperature", "coolant_temp_c", "celsius", "coolant",
                (("overheat limit", "coolant_temp_c"),), f"{bucket}; dashed: the COOLANT_OVERHEAT limit."),
        _signal("Fuel level", "fuel_level_pct", "percent", "fuel", (), bucket),
        blocks.timeseries_panel("Engine hours and next service", f"""
SELECT $__timeGroupAlias(r.ts, $__interval, NULL),
       max(r.engine_hours) AS "engine hours",
       min(svc.due) AS "next service due"
FROM readings r
CROSS JOIN (SELECT {next_service_sql('coalesce(s.engine_hours, 0)', 'e.last_service_hours')} AS due
            FROM equipment e LEFT JOIN equipment_state s ON s.equipment_id = e.id
            WHERE e.id = {MACHINE}) svc
WHERE r.equipment_id = {MACHINE} AND $__timeFilter(r.ts)
GROUP BY 1
ORDER BY 1""", unit="h", fill=0, decimals=1, width=12, height=8,
                                description="Operating hours as the controller counts them; dashed: when the next "
                                            "scheduled service falls due (every 250 h).")
        .override_by_name("next service due", props.dashed_limit("orange")),
    ]


def diagnosis() -> table.Panel:
    return (
        blocks.table_panel("Current diagnosis: open faults, probable causes and what to try", f"""
SELECT f.started_at AS "since", f.severity, f.fault_code AS "fault",
       coalesce(f.title, f.diagnosis ->> 'title') AS "what",
       c.rank AS "rank",
       c.cause ->> 'title' AS "probable cause",
       (c.cause ->> 'probability')::float AS "probability",
       array_to_string(ARRAY(SELECT jsonb_array_elements_text(c.cause -> 'because')), '; ') AS "because",
       {remedy_steps('c.cause')} AS "remedy",
       (c.cause ->> 'remote_resolvable')::boolean AS "remote fix",
       c.cause ->> 'spare_part' AS "spare part"
FROM faults f
CROSS JOIN LATERAL jsonb_array_elements(coalesce(f.diagnosis -> 'causes', '[]'::jsonb))
    WITH ORDINALITY AS c(cause, rank)
WHERE f.equipment_id = {MACHINE} AND f.ended_at IS NULL
ORDER BY {severity_rank('f.severity')}, f.started_at DESC, f.id, c.rank""",
                           width=24, height=10,
                           description="Each open fault with its probable causes, most probable first, the evidence "
                                       "for each, and the remedy steps to walk the customer through. 'remote fix': "
                                       "the cause is usually solved without a visit; otherwise the spare part the "
                                       "engineer should bring.")
        .align(common_model.FieldTextAlignment.AUTO)
        .cell_options(common_model.TableAutoCellOptions(wrap_text=True))
        .inspect(True)
        .override_by_name("since", [props.unit("dateTimeAsIso"), props.width(150)])
        .override_by_name("severity", [props.value_colors(SEVERITY_COLORS), props.color_text(), props.width(80)])
        .override_by_name("rank", [props.width(50)])
        .override_by_name("probability", [
            props.unit("percentunit"), props.decimals(0), props.width(90),
            props.cell(common_model.TableBarGaugeCellOptions(mode=common_model.BarGaugeDisplayMode.BASIC)),
            props.min_value(0), props.max_value(1)])
        .override_by_name("remedy", [props.width(420)])
        .override_by_name("remote fix", [props.width(80)])
    )


def location_track() -> geomap.Panel:
    return (
        blocks.geomap_panel("Location track", [f"""
SELECT $__timeGroupAlias(ts, $__interval),
       avg(lat) AS lat, avg(lon) AS lon,
       round(avg(speed_kmh)::numeric, 1) AS "speed km/h"
FROM readings
WHERE equipment_id = {MACHINE} AND $__timeFilter(ts) AND lat IS NOT NULL AND lon IS NOT NULL
GROUP BY 1
ORDER BY 1""", f"""
SELECT s.name AS site, s.lat, s.lon, s.radius_m AS "geofence radius m"
FROM sites s
JOIN equipment e ON e.site = s.name
WHERE e.id = {MACHINE}"""],
                            [blocks.markers_layer("Track", fixed="purple", size=4, ref_id="A"),
                             blocks.markers_layer("Job site", fixed="green", size=12, text_field="site", ref_id="B")],
                            width=12, height=12, zoom=13,
                            description="Positions over the time range (one point per time bucket) and the centre of "
                                        "the job site the machine is registered to (its geofence).")
        .color_scheme(blocks.fixed_color("purple"))
    )


def work_orders() -> table.Panel:
    return (
        blocks.table_panel("Open work orders", f"""
SELECT t.id AS "ticket", t.created_at AS "opened", t.priority, t.state, t.title,
       t.remote_resolvable AS "remote fix likely",
       (SELECT count(*) FROM ticket_alarms ta WHERE ta.ticket_id = t.id) AS "alarms"
FROM tickets t
WHERE t.equipment_id = {MACHINE} AND {OPEN_TICKET}
ORDER BY t.created_at DESC""", width=12, height=6)
        .override_by_name("ticket", [props.links(api_ticket_link("ticket"))])
        .override_by_name("opened", [props.unit("dateTimeFromNow")])
        .override_by_name("priority", [props.value_colors(SEVERITY_COLORS), props.color_text()])
    )


def alarms() -> table.Panel:
    return (
        blocks.table_panel("Alarms (active, and raised in the time range)", f"""
SELECT a.id AS "alarm", a.raised_at AS "raised", a.cleared_at AS "cleared", a.state, a.severity,
       a.fault_code AS "fault", a.occurrences, a.ticket_id AS "ticket", a.equipment_id
FROM alarms a
WHERE a.equipment_id = {MACHINE} AND (a.state = 'active' OR $__timeFilter(a.raised_at))
ORDER BY a.state, {severity_rank('a.severity')}, a.raised_at DESC""", width=12, height=6)
        .override_by_name("alarm", [props.links(api_alarms_link(), api_open_ticket_link())])
        .override_by_name("ticket", [props.links(api_ticket_link("ticket"))])
        .override_by_name("severity", [props.value_colors(SEVERITY_COLORS), props.color_text()])
        .override_by_name("equipment_id", [props.hidden()])
    )


def alarm_annotations() -> dashboard_builder.AnnotationQuery:
    return blocks.annotation("Alarms", f"""
SELECT a.raised_at AS time, a.cleared_at AS timeend,
       upper(a.severity) || ' alarm ' || a.fault_code
           || CASE WHEN a.occurrences > 1 THEN ' (' || a.occurrences || ' times)' ELSE '' END AS text,
       'alarm,' || a.severity || ',' || a.fault_code AS tags
FROM alarms a
WHERE a.equipment_id = {MACHINE}
  AND a.raised_at <= $__timeTo() AND coalesce(a.cleared_at, now()) >= $__timeFrom()
ORDER BY 1""", "red")


def fault_annotations() -> dashboard_builder.AnnotationQuery:
    return blocks.annotation("Faults", f"""
SELECT f.started_at AS time, f.ended_at AS timeend,
       f.fault_code || ': ' || coalesce(f.title, f.diagnosis ->> 'title', f.rule)
           || coalesce(' · most probable: ' || (f.diagnosis -> 'causes' -> 0 ->> 'title'), '') AS text,
       'fault,' || f.severity || ',' || f.rule AS tags
FROM faults f
WHERE f.equipment_id = {MACHINE}
  AND f.started_at <= $__timeTo() AND coalesce(f.ended_at, now()) >= $__timeFrom()
ORDER BY 1""", "orange")


def dashboard() -> dashboard_model.Dashboard:
    return blocks.make_dashboard(
        MACHINE_UID,
        "IronSight · Machine",
        "One machine: where it is, what it is doing, what went wrong and what to try.",
        variables=[customer_variable(multi=False), equipment_variable(), api_url_variable(),
                   offline_after_variable()],
        annotations=[alarm_annotations(), fault_annotations()],
        time_from="now-3h",
        tags=("machine",),
        panels=[
            *now_stats(),
            diagnosis(),
            Row("Signals"),
            *signals(),
            Row("Where it has been, and its work orders"),
            location_track(), work_orders(), alarms(),
        ],
    )
