"""Fleet overview: where every machine is and what it is doing, alarms, and the health of ingest."""

from __future__ import annotations

from core.vocabulary import WORKING_RPM
from dashboards.common import (
    FLEET_UID,
    customer_variable,
    machine_link,
    offline_after_variable,
)
from dashboards.model import (
    Dashboard,
    Panel,
    Query,
    Row,
    fixed_color,
    geomap_options,
    markers_layer,
    override,
    stat_options,
    table_options,
    thresholds,
    timeseries_defaults,
    timeseries_options,
    value_colors,
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


def _state_overrides() -> list[dict]:
    return [override(state, ("color", fixed_color(color))) for state, color in STATE_COLORS.items()]


def fleet_map() -> Panel:
    return Panel(
        "geomap", "Fleet map", [Query(FLEET + """
SELECT equipment_id, model, customer, site, state, worst_severity AS "worst alarm", lat, lon,
       round(oil_temp_c::numeric, 1) AS "oil °C", round(engine_rpm::numeric) AS rpm,
       round(fuel_level_pct::numeric) AS "fuel %", round(engine_hours::numeric, 1) AS "engine hours",
       last_received_at AS "last report"
FROM fleet
WHERE lat IS NOT NULL AND lon IS NOT NULL
ORDER BY equipment_id""")],
        width=16, height=18,
        description="Every machine at its last reported position, coloured by state: in alarm (an active alarm "
                    "other than OFFLINE), offline (silent for longer than the offline limit), working (engine "
                    f"above {WORKING_RPM:.0f} rpm) or idle. Click a machine for its drill-down.",
        options=geomap_options([markers_layer("Machines", color_field="state", size=7)]),
        defaults={"color": {"mode": "thresholds"}, "thresholds": thresholds("blue"),
                  "links": [machine_link()]},
        overrides=[override("state", ("mappings", value_colors(STATE_COLORS)))],
    )


def state_counts() -> Panel:
    return Panel(
        "stat", "Machines by state", [Query(FLEET + f"""
SELECT {_count_columns()},
       count(*) AS "machines"
FROM fleet""")],
        width=8, height=5,
        options=stat_options(orientation="horizontal"),
        defaults={"color": fixed_color("text"), "unit": "none"},
        overrides=_state_overrides(),
    )


def alarms_by_severity() -> Panel:
    columns = ",\n       ".join(f"count(*) FILTER (WHERE a.severity = '{s}') AS \"{s}\"" for s in SEVERITIES)
    return Panel(
        "stat", "Active alarms by severity", [Query(f"""
SELECT {columns}
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
WHERE a.state = 'active' AND {any_of('customer', 'e.customer')}""")],
        width=8, height=5,
        options=stat_options(orientation="horizontal"),
        defaults={"color": {"mode": "thresholds"}, "thresholds": thresholds("green", (1, "red")), "unit": "none"},
        overrides=[override(s, ("thresholds", thresholds("green", (1, c)))) for s, c in SEVERITY_COLORS.items()],
    )


def by_model() -> Panel:
    return Panel(
        "barchart", "Machines by model and state", [Query(FLEET + f"""
SELECT model,
       {_count_columns()}
FROM fleet
GROUP BY model
ORDER BY model""")],
        width=8, height=8,
        options={"xField": "model", "orientation": "horizontal", "stacking": "normal", "showValue": "auto",
                 "barWidth": 0.8, "groupWidth": 0.7, "xTickLabelRotation": 0,
                 "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                 "tooltip": {"mode": "multi", "sort": "none"}},
        defaults={"color": {"mode": "palette-classic"}, "custom": {"fillOpacity": 85, "lineWidth": 0}},
        overrides=_state_overrides(),
    )


def machine_table() -> Panel:
    return Panel(
        "table", "Machines", [Query(FLEET + f"""
SELECT equipment_id, state, worst_severity AS "worst alarm", active_alarms AS "active alarms", customer, model,
       kind, site, round(oil_temp_c::numeric, 1) AS "oil °C", round(engine_rpm::numeric) AS rpm,
       round(fuel_level_pct::numeric) AS "fuel %", round(engine_hours::numeric, 1) AS "engine hours",
       last_received_at AS "last report"
FROM fleet
ORDER BY CASE state WHEN 'in alarm' THEN 0 WHEN 'offline' THEN 1 ELSE 2 END,
         {severity_rank('worst_severity')} NULLS LAST, equipment_id""")],
        width=24, height=10,
        description="The fleet register with each machine's latest reading; machines in alarm first.",
        options=table_options(),
        defaults={"custom": {"align": "auto", "filterable": True, "cellOptions": {"type": "auto"}}},
        overrides=[
            override("equipment_id", ("links", [machine_link()]), ("displayName", "machine")),
            override("state", ("mappings", value_colors(STATE_COLORS)),
                     ("custom.cellOptions", {"type": "color-text"})),
            override("worst alarm", ("mappings", value_colors(SEVERITY_COLORS)),
                     ("custom.cellOptions", {"type": "color-text"})),
            override("last report", ("unit", "dateTimeFromNow")),
        ],
    )


def readings_rate() -> Panel:
    return Panel(
        "timeseries", "Readings stored per second", [Query("""
SELECT $__timeGroupAlias(ts, $__interval, 0),
       count(*) * 1000.0 / $__interval_ms AS "readings/s"
FROM readings
WHERE $__timeFilter(ts)
GROUP BY 1
ORDER BY 1""", "time_series")],
        width=12, height=8,
        description="Readings in the database per second of reading time, over the whole fleet.",
        options=timeseries_options(), defaults=timeseries_defaults("reqps", decimals=1),
    )


def dead_letters_rate() -> Panel:
    return Panel(
        "timeseries", "Dead letters by reason", [Query("""
SELECT $__timeGroupAlias(received_at, $__interval),
       reason AS metric,
       count(*) AS value
FROM dead_letters
WHERE $__timeFilter(received_at)
GROUP BY 1, 2
ORDER BY 1, 2""", "time_series")],
        width=12, height=8,
        description="Input refused by ingest (unknown equipment, malformed, out of bounds …), by reason.",
        options=timeseries_options(),
        defaults={**timeseries_defaults("short"), "custom": {**timeseries_defaults("short")["custom"],
                                                              "drawStyle": "bars", "fillOpacity": 80}},
    )


def ingest_now() -> Panel:
    return Panel(
        "stat", "Ingest now", [Query("""
SELECT (SELECT count(*) FROM readings WHERE ts > now() - interval '1 minute') / 60.0 AS "readings/s (last minute)",
       (SELECT count(*) FROM dead_letters WHERE received_at > now() - interval '1 hour') AS "dead letters (last hour)",
       (SELECT count(*) FROM ingest_stats WHERE updated_at > now() - interval '1 minute') AS "workers writing",
       (SELECT coalesce(sum(readings_duplicate)::float / nullif(sum(readings_stored + readings_duplicate), 0), 0)
        FROM ingest_stats) AS "duplicates"
""")],
        width=12, height=5,
        options=stat_options(color_mode="value"),
        defaults={"color": fixed_color("text"), "decimals": 1},
        overrides=[override("duplicates", ("unit", "percentunit")),
                   override("dead letters (last hour)", ("color", {"mode": "thresholds"}),
                            ("thresholds", thresholds("green", (1, "orange"))), ("decimals", 0)),
                   override("workers writing", ("color", {"mode": "thresholds"}),
                            ("thresholds", thresholds("red", (1, "green"))), ("decimals", 0))],
    )


def ingest_workers() -> Panel:
    return Panel(
        "table", "Ingest workers", [Query("""
SELECT worker, started_at AS "started", updated_at AS "last batch",
       round(extract(epoch FROM now() - updated_at)) AS "silent for",
       messages, readings_stored AS "stored", readings_duplicate AS "duplicates", dead_letters AS "dead letters"
FROM ingest_stats
ORDER BY worker""")],
        width=12, height=5,
        description="Counters of each ingest worker since it started.",
        options=table_options(),
        overrides=[override("silent for", ("unit", "s"), ("custom.cellOptions", {"type": "color-text"}),
                            ("color", {"mode": "thresholds"}), ("thresholds", thresholds("green", (60, "red")))),
                   override("last batch", ("unit", "dateTimeFromNow"))],
    )


def dashboard() -> Dashboard:
    return Dashboard(
        uid=FLEET_UID,
        title="IronSight · Fleet overview",
        description="Where every machine is and what it is doing; active alarms; ingest health.",
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
