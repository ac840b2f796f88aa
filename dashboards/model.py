"""Typed building blocks for Grafana dashboards, rendered to Grafana's dashboard JSON.

Plain dataclasses instead of a builder library: the few panel kinds IronSight uses are spelled out
here once, and every dashboard is a function that returns a :class:`Dashboard`. Rendering is
deterministic: panel ids and grid positions follow the order of the panels, nothing depends on
the clock or the environment, and every dashboard, variable and data source has a stable uid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from textwrap import dedent
from typing import Any, Literal

Json = dict[str, Any]

# The one data source every panel reads: Grafana's PostgreSQL plugin (id since Grafana 10.3; the
# old id "postgres" is an alias) pointed at IronSight's database with a read-only role.
DATASOURCE_UID = "ironsight-pg"
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE_NAME = "IronSight"
DATASOURCE_REF: Json = {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
# Lower bound of $__interval (the data source's "Min time interval"): controllers report at most
# once a second, so finer buckets would only be empty.
MIN_INTERVAL = "1s"

FOLDER_UID = "ironsight"
FOLDER_TITLE = "IronSight"
TAG = "ironsight"
# Grafana migrates older dashboard JSON on load; 39 is understood by Grafana 10.4 and later.
SCHEMA_VERSION = 39
GRID_COLUMNS = 24

Format = Literal["table", "time_series"]


def sql(text: str) -> str:
    """SQL as written in the source, without the indentation of the Python code around it."""
    return dedent(text).strip()


@dataclass(frozen=True, slots=True)
class Query:
    """A raw SQL query of the PostgreSQL data source. ``time_series`` needs a ``time`` column."""

    sql: str
    format: Format = "table"

    def target(self, ref_id: str) -> Json:
        return {"datasource": DATASOURCE_REF, "editorMode": "code", "format": self.format, "rawQuery": True,
                "rawSql": sql(self.sql), "refId": ref_id}


@dataclass(slots=True)
class Panel:
    type: str
    title: str
    queries: list[Query]
    width: int = 12
    height: int = 8
    description: str = ""
    options: Json = field(default_factory=dict)
    defaults: Json = field(default_factory=dict)  # fieldConfig.defaults
    overrides: list[Json] = field(default_factory=list)
    transformations: list[Json] = field(default_factory=list)
    max_data_points: int | None = None

    def to_json(self, panel_id: int, grid: Json) -> Json:
        out: Json = {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE_REF,
            "gridPos": grid,
            "targets": [q.target(chr(ord("A") + i)) for i, q in enumerate(self.queries)],
            "fieldConfig": {"defaults": self.defaults, "overrides": self.overrides},
            "options": self.options,
        }
        if self.transformations:
            out["transformations"] = self.transformations
        if self.max_data_points is not None:
            out["maxDataPoints"] = self.max_data_points
        return out


@dataclass(frozen=True, slots=True)
class Row:
    """A full-width row header; the panels after it flow below."""

    title: str


@dataclass(frozen=True, slots=True)
class QueryVariable:
    """A variable whose options come from SQL (``__text``/``__value`` columns, or the values).

    ``all_value``, when set, is what Grafana substitutes, unformatted, for "All": IronSight uses
    ``'__all'`` and filters with ``('__all' IN ($v) OR col IN ($v))``, which stays valid SQL when
    the variable has no options and does not expand "All" into a list of every value.
    """

    name: str
    label: str
    query: str
    include_all: bool = False
    multi: bool = False
    all_value: str | None = None
    # 1: on dashboard load; 2: on time range change.
    refresh: int = 1
    description: str = ""

    def to_json(self) -> Json:
        text = sql(self.query)
        out: Json = {
            "type": "query", "name": self.name, "label": self.label, "description": self.description,
            "datasource": DATASOURCE_REF, "definition": text, "query": text, "refresh": self.refresh,
            "includeAll": self.include_all, "multi": self.multi, "sort": 1, "hide": 0, "regex": "",
            "options": [], "current": _all_current(self.multi) if self.include_all else {},
        }
        if self.all_value is not None:
            out["allValue"] = self.all_value
        return out


@dataclass(frozen=True, slots=True)
class CustomVariable:
    name: str
    label: str
    values: tuple[str, ...]
    include_all: bool = False
    multi: bool = False
    all_value: str | None = None
    description: str = ""

    def to_json(self) -> Json:
        options = [{"selected": False, "text": v, "value": v} for v in self.values]
        if self.include_all:
            options.insert(0, {"selected": True, "text": "All", "value": "$__all"})
        current = _all_current(self.multi) if self.include_all else {"text": self.values[0], "value": self.values[0]}
        out: Json = {
            "type": "custom", "name": self.name, "label": self.label, "description": self.description,
            "query": ",".join(self.values), "includeAll": self.include_all, "multi": self.multi, "hide": 0,
            "options": options, "current": current,
        }
        if self.all_value is not None:
            out["allValue"] = self.all_value
        return out


@dataclass(frozen=True, slots=True)
class TextboxVariable:
    name: str
    label: str
    default: str
    description: str = ""

    def to_json(self) -> Json:
        return {"type": "textbox", "name": self.name, "label": self.label, "description": self.description,
                "query": self.default, "hide": 0,
                "current": {"text": self.default, "value": self.default},
                "options": [{"selected": True, "text": self.default, "value": self.default}]}


@dataclass(frozen=True, slots=True)
class ConstantVariable:
    """A hidden value the queries share (Grafana does not show constants on the dashboard)."""

    name: str
    value: str
    description: str = ""

    def to_json(self) -> Json:
        return {"type": "constant", "name": self.name, "label": self.name, "description": self.description,
                "query": self.value, "hide": 2, "current": {"text": self.value, "value": self.value},
                "options": [{"selected": True, "text": self.value, "value": self.value}]}


Variable = QueryVariable | CustomVariable | TextboxVariable | ConstantVariable


@dataclass(frozen=True, slots=True)
class Annotation:
    """Events drawn on every time series panel: the query returns ``time``, ``timeend``, ``text``, ``tags``."""

    name: str
    query: str
    color: str

    def to_json(self) -> Json:
        return {"name": self.name, "datasource": DATASOURCE_REF, "enable": True, "hide": False,
                "iconColor": self.color, "target": Query(self.query).target("Anno")}


_BUILT_IN_ANNOTATIONS: Json = {
    "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
    "target": {"limit": 100, "matchAny": False, "tags": [], "type": "dashboard"},
}


def _all_current(multi: bool) -> Json:
    return {"text": ["All"], "value": ["$__all"]} if multi else {"text": "All", "value": "$__all"}


@dataclass(slots=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[Panel | Row]
    variables: list[Variable] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    time_from: str = "now-6h"
    refresh: str = "30s"
    tags: tuple[str, ...] = ()

    def to_json(self) -> Json:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": [TAG, *self.tags],
            "editable": False,
            "graphTooltip": 1,  # shared crosshair: the same instant across a machine's signals
            "timezone": "browser",
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m"]},
            "refresh": self.refresh,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "links": [{"type": "dashboards", "tags": [TAG], "asDropdown": True, "title": "IronSight",
                       "includeVars": False, "keepTime": True, "targetBlank": False, "icon": "external link",
                       "tooltip": "", "url": ""}],
            "annotations": {"list": [_BUILT_IN_ANNOTATIONS, *(a.to_json() for a in self.annotations)]},
            "templating": {"list": [v.to_json() for v in self.variables]},
            "panels": _layout(self.panels),
        }


def _layout(items: list[Panel | Row]) -> list[Json]:
    """Place each panel as high as it fits, then as far left (panels stack beside a tall one);
    a row starts below everything before it."""
    out: list[Json] = []
    heights = [0] * GRID_COLUMNS  # the filled height of each grid column
    for panel_id, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y = max(heights)
            out.append({"id": panel_id, "type": "row", "title": item.title, "collapsed": False, "panels": [],
                        "gridPos": {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": y}})
            heights = [y + 1] * GRID_COLUMNS
            continue
        width = item.width
        if not 0 < width <= GRID_COLUMNS:
            raise ValueError(f"panel {item.title!r} is {width} wide; the grid has {GRID_COLUMNS} columns")
        y, x = min((max(heights[x:x + width]), x) for x in range(GRID_COLUMNS - width + 1))
        out.append(item.to_json(panel_id, {"h": item.height, "w": width, "x": x, "y": y}))
        heights[x:x + width] = [y + item.height] * width
    return out


# --- field configuration helpers ---

def override(name: str, *properties: tuple[str, Any]) -> Json:
    """Field config for the field (column or series) called ``name``."""
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": key, "value": value} for key, value in properties]}


def value_colors(colors: dict[str, str]) -> list[Json]:
    """Value mappings that give each text value its colour (and keep the text)."""
    return [{"type": "value", "options": {value: {"color": color, "index": index}
                                          for index, (value, color) in enumerate(colors.items())}}]


def link(title: str, url: str, *, new_tab: bool = False) -> Json:
    return {"title": title, "url": url, "targetBlank": new_tab}


def thresholds(base: str, *steps: tuple[float, str]) -> Json:
    return {"mode": "absolute", "steps": [{"color": base, "value": None},
                                          *({"color": color, "value": value} for value, color in steps)]}


def fixed_color(color: str) -> Json:
    return {"mode": "fixed", "fixedColor": color}


def timeseries_defaults(unit: str, *, fill: int = 10, decimals: int | None = None) -> Json:
    defaults: Json = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": fill, "showPoints": "never",
                   "spanNulls": False, "axisPlacement": "auto", "lineInterpolation": "linear"},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return defaults


def dashed_limit(name: str, color: str = "red") -> Json:
    """A series drawn as a dashed line without fill: a rule's limit."""
    return override(name, ("color", fixed_color(color)), ("custom.fillOpacity", 0), ("custom.lineWidth", 2),
                    ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}))


def stat_options(*, fields: str = "", color_mode: str = "background", text_mode: str = "value_and_name",
                 orientation: str = "auto") -> Json:
    return {"reduceOptions": {"values": False, "calcs": ["lastNotNull"], "fields": fields},
            "colorMode": color_mode, "graphMode": "none", "justifyMode": "auto", "textMode": text_mode,
            "orientation": orientation, "wideLayout": True, "showPercentChange": False}


def table_options(*, sort_by: str | None = None, descending: bool = False) -> Json:
    options: Json = {"showHeader": True, "cellHeight": "sm",
                     "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False}}
    if sort_by is not None:
        options["sortBy"] = [{"displayName": sort_by, "desc": descending}]
    return options


def timeseries_options() -> Json:
    return {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
            "tooltip": {"mode": "multi", "sort": "none"}}


def markers_layer(name: str, *, color_field: str | None = None, fixed: str = "blue", size: int = 6,
                  text_field: str | None = None) -> Json:
    """A Geomap markers layer placed by the ``lat``/``lon`` columns."""
    style: Json = {
        "color": {"fixed": fixed, **({"field": color_field} if color_field else {})},
        "opacity": 0.85,
        "size": {"fixed": size, "min": 2, "max": 15},
        "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
        "rotation": {"fixed": 0, "min": -360, "max": 360, "mode": "mod"},
        "textConfig": {"fontSize": 11, "offsetX": 0, "offsetY": -12, "textAlign": "center",
                       "textBaseline": "middle"},
    }
    if text_field:
        style["text"] = {"field": text_field, "fixed": "", "mode": "field"}
    return {"type": "markers", "name": name, "tooltip": True,
            "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
            "config": {"showLegend": color_field is not None, "style": style}}


def geomap_options(layers: list[Json], *, zoom: int = 4, lat: float = 48.5, lon: float = 9.0) -> Json:
    return {"basemap": {"type": "default", "name": "Basemap", "config": {}},
            "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True, "showScale": True,
                         "showMeasure": False, "showDebug": False},
            "tooltip": {"mode": "details"},
            "view": {"id": "fit", "lat": lat, "lon": lon, "zoom": zoom, "allLayers": True},
            "layers": layers}
