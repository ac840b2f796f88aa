"""Fleet overview: where every machine is and what it is doing, alarms, and the health of ingest."""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, geomap, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Row
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

from core.vocabulary import WORKING_RPM
from dashboards import blocks, props
from dashboards.common import (
    FLEET_UID,
    customer_variable,
    machine_link,
    offline_after_variable,
)
from dashboards.sql import (
    SEVERITIES,
    SEVERITY_COLORS,
    STATE_COLORS,
    STATES,
    any_of,
    fleet_state,
    severity_rank,
)

FLEET = fleet_state(any_of("customer", "e.customer"))


def _count_columns() -> str:
    return ",\n       ".join(f"count(*) FILTER (WHERE state = '{s}') AS \"{s}\"" for s in STATES)


def _state_colors(panel: stat.Panel | barchart.Panel) -> None:
    for state, color in STATE_COLORS.items():
        panel.override_by_name(state, [props.color(color)])


def fleet_map() -> geomap.Panel:
    return (
        blocks.geomap_panel(
            "Fleet map", [FLEET + """
SELECT equipment_id, model, customer, site, state, worst_severity AS "worst alarm", lat, lon,
       round(oil_temp_c::numeric, 1) AS "oil °C", round(engine_rpm::numeric) AS rpm,
       round(fuel_level_pct::numeric) AS "fuel %", round(engine_hours::numeric, 1) AS "engine hours",
       last_received_at AS "last report"
FROM fleet
WHERE lat IS NOT NULL AND lon IS NOT NULL
ORDER BY equipment_id"""],
            [blocks.markers_layer("Machines", color_field="state", size=7)],
            width=16, height=18,
            description="Every machine at its last reported position, coloured by state: in alarm (an active alarm "
                        "other than OFFLINE), offline (silent for longer than the offline limit), working (engine "
                        f"above {WORKING_RPM:.0f} rpm) or idle. Click a machine for its drill-down.")
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("blue"))
        .data_links([machine_link()])
        .override_by_name("state", [props.value_colors(STATE_COLORS)])
    )


def state_counts() -> stat.Panel:
    panel = (
        blocks.stat_panel("Machines by state", FLEET + f"""
SELECT {_count_columns()},
       count(*) AS "machines"
FROM fleet""", width=8, height=5, orientation=common_model.VizOrientation.HORIZONTAL)
        .color_scheme(blocks.fixed_color("text"))
        .unit("none")
    )
    _state_colors(panel)
    return panel


def alarms_by_severity() -> stat.Panel:
    columns = ",\n       ".join(f"count(*) FILTER (WHERE a.severity = '{s}') AS \"{s}\"" for s in SEVERITIES)
    panel = (
        blocks.stat_panel("Active alarms by severity", f"""
SELECT {columns}
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
WHERE a.state = 'active' AND {any_of('customer', 'e.customer')}""",
                          width=8, height=5, orientation=common_model.VizOrientation.HORIZONTAL)
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("green", (1, "red")))
        .unit("none")
    )
    for severity, color in SEVERITY_COLORS.items():
        panel.override_by_name(severity, [props.thresholds("green", (1, color))])
    return panel


def by_model() -> barchart.Panel:
    panel = blocks.barchart_panel("Machines by model and state", FLEET + f"""
SELECT model,
       {_count_columns()}
FROM fleet
GROUP BY model
ORDER BY model""", x_field="model", stacking=common_model.StackingMode.NORMAL, width=8, height=8)
    _state_colors(panel)
    return panel


def machine_table() -> table.Panel:
    return (
        blocks.table_panel("Machines", FLEET + f"""
SELECT equipment_id, state, worst_severity AS "worst alarm", active_alarms AS "active alarms", customer, model,
       kind, site, round(oil_temp_c::numeric, 1) AS "oil °C", round(engine_rpm::numeric) AS rpm,
       round(fuel_level_pct::numeric) AS "fuel %", round(engine_hours::numeric, 1) AS "engine hours",
       last_received_at AS "last report"
FROM fleet
ORDER BY CASE state WHEN 'in alarm' THEN 0 WHEN 'offline' THEN 1 ELSE 2 END,
         {severity_rank('worst_severity')} NULLS LAST, equipment_id""",
                           width=24, height=10, filterable=True,
                           description="The fleet register with each machine's latest reading; machines in alarm "
                                       "first.")
        .override_by_name("equipment_id", [props.links(machine_link()), props.display_name("machine")])
        .override_by_name("state", [props.value_colors(STATE_COLORS), props.color_text()])
        .override_by_name("worst alarm", [props.value_colors(SEVERITY_COLORS), props.color_text()])
        .override_by_name("last report", [props.unit("dateTimeFromNow")])
    )


def readings_rate() -> timeseries.Panel:
    return blocks.timeseries_panel("Readings stored per second", """
SELECT $__timeGroupAlias(ts, $__interval, 0),
       count(*) * 1000.0 / $__interval_ms AS "readings/s"
FROM readings
WHERE $__timeFilter(ts)
GROUP BY 1
ORDER BY 1""", unit="reqps", decimals=1, width=12, height=8,
                                   description="Readings in the database per second of reading time, over the "
                                               "whole fleet.")


def dead_letters_rate(title: str = "Dead letters by reason",
                      description: str = "Input refused by ingest (unknown equipment, malformed, out of bounds …), "
                                         "by reason.") -> timeseries.Panel:
    return (
        blocks.timeseries_panel(title, """
SELECT $__timeGroupAlias(received_at, $__interval),
       reason AS metric,
       count(*) AS value
FROM dead_letters
WHERE $__timeFilter(received_at)
GROUP BY 1, 2
ORDER BY 1, 2""", unit="short", width=12, height=8, description=description)
        .draw_style(common_model.GraphDrawStyle.BARS)
        .fill_opacity(80)
    )


def ingest_now() -> stat.Panel:
    return (
        blocks.stat_panel("Ingest now", """
SELECT (SELECT count(*) FROM readings WHERE ts > now() - interval '1 minute') / 60.0 AS "readings/s (last minute)",
       (SELECT count(*) FROM dead_letters WHERE received_at > now() - interval '1 hour') AS "dead letters (last hour)",
       (SELECT count(*) FROM ingest_stats WHERE updated_at > now() - interval '1 minute') AS "workers writing",
       (SELECT coalesce(sum(readings_duplicate)::float / nullif(sum(readings_stored + readings_duplicate), 0), 0)
        FROM ingest_stats) AS "duplicates"
""", width=12, height=5, color_mode=common_model.BigValueColorMode.VALUE)
        .color_scheme(blocks.fixed_color("text"))
        .decimals(1)
        .override_by_name("duplicates", [props.unit("percentunit")])
        .override_by_name("dead letters (last hour)", [props.threshold_colors(),
                                                       props.thresholds("green", (1, "orange")), props.decimals(0)])
        .override_by_name("workers writing", [props.threshold_colors(), props.thresholds("red", (1, "green")),
                                              props.decimals(0)])
    )


def ingest_workers() -> table.Panel:
    return (
        blocks.table_panel("Ingest workers", """
SELECT worker, started_at AS "started", updated_at AS "last batch",
       round(extract(epoch FROM now() - updated_at)) AS "silent for",
       messages, readings_stored AS "stored", readings_duplicate AS "duplicates", dead_letters AS "dead letters"
FROM ingest_stats
ORDER BY worker""", width=12, height=5, description="Counters of each ingest worker since it started.")
        .override_by_name("silent for", [props.unit("s"), props.color_text(), props.threshold_colors(),
                                         props.thresholds("green", (60, "red"))])
        .override_by_name("last batch", [props.unit("dateTimeFromNow")])
    )


def dashboard() -> dashboard_model.Dashboard:
    return blocks.make_dashboard(
        FLEET_UID,
        "IronSight · Fleet overview",
        "Where every machine is and what it is doing; active alarms; ingest health.",
        variables=[customer_variable(multi=True), offline_after_variable()],
        time_from="now-1h",
        tags=("fleet",),
        panels=[
            fleet_map(), state_counts(), alarms_by_severity(), by_model(),
            machine_table(),
            Row("Ingest health"),
            readings_rate(), dead_letters_rate(), ingest_now(), ingest_workers(),
        ],
    )
