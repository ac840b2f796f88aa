"""Run every query of the rendered dashboards on a database, as Grafana would, and judge the answers.

For each dashboard: the template variables are resolved in order (query variables run their SQL
and take "All" or their first option, unless a value is chosen), then every annotation and panel
query is prepared exactly as Grafana prepares it (dashboards.grafana_macros) and run. A query passes when
it runs, returns rows, returns only column types Grafana's PostgreSQL data source reads, and
returns what its panel uses: ``time`` (in time order) for time series, the fields the Geomap
layers, bar charts, stats, overrides and data links name, and ``time``/``text`` for annotations.

Used by the tests on a seeded database and by ``ironsight dashboards check`` on a live one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql as pgsql

from dashboards.constants import DATASOURCE_UID, GRID_COLUMNS, MIN_INTERVAL, Json
from dashboards.grafana_macros import (
    Interval,
    MacroError,
    TimeRange,
    VariableValue,
    calculate_interval,
    prepare,
)

# Types Grafana's PostgreSQL data source turns into fields (text, numbers, booleans, times).
READABLE_TYPES = frozenset({"text", "varchar", "bpchar", "name", "bool", "int2", "int4", "int8", "float4",
                            "float8", "numeric", "timestamptz", "timestamp", "date"})
NUMERIC_TYPES = frozenset({"int2", "int4", "int8", "float4", "float8", "numeric"})
TIME_TYPES = frozenset({"timestamptz", "timestamp", "date"}) | NUMERIC_TYPES
# A dashboard is about 1920 px wide in a dispatcher's browser: a panel's default max data points.
DASHBOARD_WIDTH_PX = 1920

# TimescaleDB's time_bucket(interval, timestamptz) for a database without TimescaleDB, so that the
# queries Grafana writes with the TimescaleDB toggle on can be run there too (same origin: Monday
# 2000-01-03). Created inside the checking transaction and rolled back with it.
TIME_BUCKET_SHIM = """
CREATE FUNCTION public.time_bucket(bucket_width interval, ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS 'SELECT date_bin(bucket_width, ts, TIMESTAMPTZ ''2000-01-03 00:00:00+00'')'
"""


@dataclass(slots=True)
class QueryResult:
    dashboard: str
    where: str  # "panel 'Fleet map' A", "variable customer", "annotation Alarms"
    sql: str = ""
    columns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def __str__(self) -> str:
        head = f"{self.dashboard}: {self.where}: {len(self.rows)} rows"
        return head + "".join(f"\n    {p}" for p in self.problems)


def check_dashboards(conn: psycopg.Connection, dashboards: list[Json], time_range: TimeRange, *,
                     timescaledb: bool = False, choices: dict[str, dict[str, str | list[str]]] | None = None,
                     role: str | None = None, timescaledb_shim: bool = False, require_rows: bool = True,
                     statement_timeout_ms: int = 30_000) -> list[QueryResult]:
    """Check every dashboard in one transaction that is rolled back; ``choices`` maps a dashboard
    uid to variable values to pick; ``role``: run as this role (SET ROLE), as Grafana's user would."""
    results: list[QueryResult] = []
    with conn.transaction(force_rollback=True):
        if timescaledb_shim:
            conn.execute(TIME_BUCKET_SHIM)
        conn.execute(pgsql.SQL("SET LOCAL statement_timeout = {}").format(statement_timeout_ms))
        if role:
            conn.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(role)))
        for dashboard in dashboards:
            checker = _DashboardChecker(conn, dashboard, time_range, timescaledb, require_rows,
                                        (choices or {}).get(dashboard["uid"], {}))
            results.extend(checker.run())
    return results


class _DashboardChecker:
    def __init__(self, conn: psycopg.Connection, dashboard: Json, time_range: TimeRange, timescaledb: bool,
                 require_rows: bool, choices: dict[str, str | list[str]]) -> None:
        self.conn = conn
        self.dashboard = dashboard
        self.time_range = time_range
        self.timescaledb = timescaledb
        self.require_rows = require_rows
        self.choices = choices
        self.variables: dict[str, VariableValue] = {}
        self.results: list[QueryResult] = []

    def run(self) -> list[QueryResult]:
        for variable in self.dashboard["templating"]["list"]:
            self._resolve(variable)
        unknown = set(self.choices) - set(self.variables)
        if unknown:
            self._result("choices").problems.append(f"no variables {sorted(unknown)} to choose")
        for annotation in self.dashboard["annotations"]["list"]:
            if annotation.get("builtIn"):
                continue
            result = self._run(f"annotation {annotation['name']}", annotation["target"]["rawSql"],
                               self._interval(None), annotation.get("datasource"))
            self._require(result, ["time", "text"])
        for panel in self.dashboard["panels"]:
            if panel["type"] != "row":
                self._check_panel(panel)
        return self.results

    # --- variables ---

    def _resolve(self, variable: Json) -> None:
        name, kind = variable["name"], variable["type"]
        if kind == "query":
            result = self._run(f"variable {name}", variable["query"], self._interval(None), variable.get("datasource"))
            options = _options(result)
        elif kind == "custom":
            options = [o.strip() for o in variable["query"].split(",") if o.strip()]
        elif kind in ("textbox", "constant"):
            options = [variable["query"]]
        else:
            raise ValueError(f"variable type {kind!r} is not checked")
        include_all = bool(variable.get("includeAll"))
        chosen = self.choices.get(name)
        if chosen is None:
            value: str | list[str] = "$__all" if include_all else (options[0] if options else "")
        else:
            value = chosen
            missing = [v for v in ([chosen] if isinstance(chosen, str) else chosen) if v not in options]
            if missing:
                self._result(f"variable {name}").problems.append(f"chosen {missing} not among options {options}")
        if variable.get("multi") and isinstance(value, str):
            value = [value]
        self.variables[name] = VariableValue(value, bool(variable.get("multi")), include_all,
                                             variable.get("allValue"), options)

    # --- panels ---

    def _check_panel(self, panel: Json) -> None:
        title = panel["title"]
        if (panel.get("datasource") or {}).get("uid") != DATASOURCE_UID:
            self._result(f"panel {title!r}").problems.append(f"panel data source is {panel.get('datasource')}")
        interval = self._interval(panel)
        results: dict[str, QueryResult] = {}
        for target in panel["targets"]:
            where = f"panel {title!r} {target['refId']}"
            result = self._run(where, target["rawSql"], interval, target.get("datasource"))
            results[target["refId"]] = result
            if target.get("format") == "time_series":
                _check_time_series(result)
        first = panel["targets"][0]["refId"]
        for ref_id, needed in _needed_fields(panel, first).items():
            if ref_id in results:
                self._require(results[ref_id], sorted(needed))
        # Overrides name fields: columns, or series of a long time series (values of "metric").
        names = {o["matcher"]["options"] for o in panel.get("fieldConfig", {}).get("overrides", [])
                 if o["matcher"]["id"] == "byName"}
        returned = {c for r in results.values() for c in r.columns}
        if "metric" not in returned and all(r.columns for r in results.values()):
            unknown = sorted(names - returned)
            if unknown:
                results[first].problems.append(f"overrides name {unknown}, queries return {sorted(returned)}")

    def _interval(self, panel: Json | None) -> Interval:
        if panel is None:
            resolution = DASHBOARD_WIDTH_PX
        else:
            resolution = panel.get("maxDataPoints") or panel["gridPos"]["w"] * DASHBOARD_WIDTH_PX // GRID_COLUMNS
        return calculate_interval(self.time_range, resolution, (panel or {}).get("interval") or MIN_INTERVAL)

    # --- running ---

    def _result(self, where: str) -> QueryResult:
        result = QueryResult(self.dashboard["uid"], where)
        self.results.append(result)
        return result

    def _run(self, where: str, raw_sql: str, interval: Interval, datasource: Json | None) -> QueryResult:
        result = self._result(where)
        if (datasource or {}).get("uid") != DATASOURCE_UID:
            result.problems.append(f"data source is {datasource}, not {DATASOURCE_UID}")
        try:
            result.sql = prepare(raw_sql, self.variables, self.time_range, interval, timescaledb=self.timescaledb)
        except MacroError as exc:
            result.problems.append(f"macro: {exc}")
            return result
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute(result.sql.encode())
                if cur.description is None:
                    result.problems.append("returns no result set")
                    return result
                result.columns = [c.name for c in cur.description]
                result.types = [_type_name(self.conn, c.type_code) for c in cur.description]
                result.rows = cur.fetchall()
        except psycopg.Error as exc:
            result.problems.append(f"{type(exc).__name__}: {str(exc).strip()}")
            return result
        if self.require_rows and not result.rows:
            result.problems.append("returns no rows")
        for column, type_name in zip(result.columns, result.types, strict=True):
            if type_name not in READABLE_TYPES:
                result.problems.append(f"column {column!r} is {type_name}, which Grafana does not read as a field")
        if len(set(result.columns)) != len(result.columns):
            result.problems.append(f"duplicate column names {result.columns}")
        return result

    def _require(self, result: QueryResult, columns: list[str]) -> None:
        if not result.columns:
            return
        missing = [c for c in columns if c not in result.columns]
        if missing:
            result.problems.append(f"panel uses {missing}, query returns {result.columns}")


def _type_name(conn: psycopg.Connection, oid: int) -> str:
    info = conn.adapters.types.get(oid)
    return info.name if info else str(oid)


def _options(result: QueryResult) -> list[str]:
    """The SQL data sources' metric-find answer: ``__text``/``__value`` pairs, else every value."""
    if "__value" in result.columns and "__text" in result.columns:
        values = [str(v) for v in result.column("__value")]
    else:
        values = [str(v) for row in result.rows for v in row]
    return list(dict.fromkeys(values))


def _check_time_series(result: QueryResult) -> None:
    if not result.columns:
        return
    if "time" not in result.columns:
        result.problems.append(f"time series without a 'time' column: {result.columns}")
        return
    index = result.columns.index("time")
    if result.types[index] not in TIME_TYPES:
        result.problems.append(f"'time' is {result.types[index]}")
    times = [row[index] for row in result.rows]
    if any(t is None for t in times) or times != sorted(times):
        result.problems.append("time series not ordered by time")
    for column, type_name in zip(result.columns, result.types, strict=True):
        if column not in ("time", "metric") and type_name not in NUMERIC_TYPES:
            result.problems.append(f"time series value column {column!r} is {type_name}, not a number")


_DATA_FIELD = re.compile(r"\$\{__data\.fields\.([^}:]+)(?::[^}]*)?\}")
_FIELDS_REGEX = re.compile(r"^/\^\(?(.*?)\)?\$/$")


def _needed_fields(panel: Json, first_ref_id: str) -> dict[str, set[str]]:
    """What the panel reads from each query's result, by refId."""
    needed: dict[str, set[str]] = {t["refId"]: set() for t in panel["targets"]}
    main = needed[first_ref_id]
    options, config = panel.get("options", {}), panel.get("fieldConfig", {})
    for layer in options.get("layers", []):
        ref_id = (layer.get("filterData") or {}).get("options", first_ref_id)
        location = layer.get("location", {})
        style = layer.get("config", {}).get("style", {})
        needed.setdefault(ref_id, set()).update(
            f for f in (location.get("latitude"), location.get("longitude"), style.get("color", {}).get("field"),
                        (style.get("text") or {}).get("field")) if f)
    if options.get("xField"):
        main.add(options["xField"])
    fields = (options.get("reduceOptions") or {}).get("fields") or ""
    match = _FIELDS_REGEX.match(fields)
    if match:
        main.update(match.group(1).split("|"))
    main.update(_DATA_FIELD.findall(str(config)))
    for sort in options.get("sortBy", []):
        main.add(sort["displayName"])
    return needed

