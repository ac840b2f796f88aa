"""IronSight's building blocks over grafana-foundation-sdk, Grafana's typed dashboard builders.

Every dashboard is a function that returns the SDK's dashboard model (``make_dashboard``, below);
every panel starts from one of the helpers here, which set what IronSight's panels share (the
data source, legends, tooltips, table and stat options), and continues with the SDK builder's own
typed methods (``.unit()``, ``.thresholds()``, ``.override_by_name()``, …).

Rendering is deterministic: panel ids and grid positions follow the order of the panels, nothing
depends on the clock or the environment, and every dashboard, variable and data source has a
stable uid. The SDK's builder flows panels left to right and wraps; IronSight's layout also stacks
panels beside a tall one, so ``make_dashboard`` places each panel itself and hands the SDK its
position.

Where the SDK's schema (the Grafana 11.6 series of grafana-foundation-sdk) cannot express what a
panel needs, a short subclass of the SDK type adds it, and says why (``postgres.SQLQuery``,
``postgres.SQLAnnotationTarget``); the few values it cannot write as IronSight would are said where
they are set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TypeVar

from grafana_foundation_sdk.builders import barchart, common, dashboard, geomap, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models import geomap as geomap_model

from dashboards import postgres
from dashboards.constants import GRID_COLUMNS, TAG, Json

REFRESH_INTERVALS = ["10s", "30s", "1m", "5m", "15m"]

PanelItem = cogbuilder.Builder[dashboard_model.Panel] | dashboard.Row
T = TypeVar("T")


class _Built(cogbuilder.Builder[T]):
    """An object already built (and placed), for the SDK methods that take a builder."""

    def __init__(self, built: T) -> None:
        self._built = built

    def build(self) -> T:
        return self._built


# --- the dashboard ---


def make_dashboard(uid: str, title: str, description: str, panels: Sequence[PanelItem], *,
                   variables: Sequence[cogbuilder.Builder[dashboard_model.VariableModel]] = (),
                   annotations: Sequence[cogbuilder.Builder[dashboard_model.AnnotationQuery]] = (),
                   time_from: str = "now-6h", refresh: str = "30s",
                   tags: Iterable[str] = ()) -> dashboard_model.Dashboard:
    """A read-only IronSight dashboard with the shared crosshair, the IronSight menu of links to the
    other dashboards, and ``panels`` laid out in order (see ``_place``)."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG, *tags])
        .readonly()
        .tooltip(dashboard_model.DashboardCursorSync.CROSSHAIR)  # the same instant across a machine's signals
        .timezone("browser")
        .time(time_from, "now")
        .timepicker(dashboard.TimePicker().refresh_intervals(REFRESH_INTERVALS))
        .refresh(refresh)
        .version(1)
        .fiscal_year_start_month(0)
        .live_now(False)
        .week_start("")
        .link(dashboard.DashboardLink("IronSight").type(dashboard_model.DashboardLinkType.DASHBOARDS)
              .tags([TAG]).as_dropdown(True).include_vars(False).keep_time(True).target_blank(False)
              .icon("external link").tooltip("").url(""))
        # Always a list (an empty one too): the checks read templating.list.
        .variables(list(variables))
        .annotations([built_in_annotations(), *annotations])
    )
    _place(board, panels)
    # schemaVersion is the SDK's (41, its Grafana 11.6 schema): the JSON is written in that schema.
    return board.build()


def _place(board: dashboard.Dashboard, items: Sequence[PanelItem]) -> None:
    """Place each panel as high as it fits, then as far left (panels stack beside a tall one); a row
    starts below everything before it. Ids count from 1 in order."""
    heights = [0] * GRID_COLUMNS  # the filled height of each grid column
    for panel_id, item in enumerate(items, start=1):
        if isinstance(item, dashboard.Row):
            y = max(heights)
            board.with_row(item.id(panel_id).grid_pos(dashboard_model.GridPos(h=1, w=GRID_COLUMNS, x=0, y=y)))
            heights = [y + 1] * GRID_COLUMNS
            continue
        panel = item.build()
        size = panel.grid_pos  # the panel's .span() and .height()
        if size is None:
            raise ValueError(f"panel {panel.title!r} has no size")
        width, height = size.w, size.h
        if not 0 < width <= GRID_COLUMNS:
            raise ValueError(f"panel {panel.title!r} is {width} wide; the grid has {GRID_COLUMNS} columns")
        y, x = min((max(heights[x:x + width]), x) for x in range(GRID_COLUMNS - width + 1))
        panel.id_val = panel_id
        panel.grid_pos = dashboard_model.GridPos(h=height, w=width, x=x, y=y)
        board.with_panel(_Built(panel))
        heights[x:x + width] = [y + height] * width


def to_json(board: dashboard_model.Dashboard) -> Json:
    """The dashboard as Grafana's JSON (plain dicts and lists), through the SDK's encoder."""
    encoded: Json = json.loads(json.dumps(board, cls=JSONEncoder))
    return encoded


# --- variables ---


def query_variable(name: str, label: str, query: str, *, include_all: bool = False, multi: bool = False,
                   all_value: str | None = None, description: str = "") -> dashboard.QueryVariable:
    """A variable whose options come from SQL (``__text``/``__value`` columns, or the values),
    refreshed when the dashboard loads.

    ``all_value``, when set, is what Grafana substitutes, unformatted, for "All": IronSight uses
    ``'__all'`` and filters with ``('__all' IN ($v) OR col IN ($v))``, which stays valid SQL when
    the variable has no options and does not expand "All" into a list of every value.

    (The SDK's schema has no ``definition``, the copy of the query Grafana's editor keeps for its
    list of variables, so the JSON has none; the variable runs ``query`` either way.)
    """
    variable = (
        dashboard.QueryVariable(name)
        .label(label)
        .hide(dashboard_model.VariableHide.DONT_HIDE)
        .description(description)
        .datasource(postgres.datasource())
        .query(postgres.sql(query))
        .refresh(dashboard_model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dashboard_model.VariableSort.ALPHABETICAL_ASC)
        .include_all(include_all)
        .multi(multi)
        .regex("")
        .options([])
    )
    if include_all:
        variable.current(_all(multi))
    # Otherwise no current (Grafana selects the first option on load): the SDK's option always has a
    # text and a value, where an empty {} would say "none chosen".
    if all_value is not None:
        variable.all_value(all_value)
    return variable


def custom_variable(name: str, label: str, values: Sequence[str], *, include_all: bool = False,
                    multi: bool = False, all_value: str | None = None,
                    description: str = "") -> dashboard.CustomVariable:
    options = [dashboard_model.VariableOption(selected=False, text=v, value=v) for v in values]
    if include_all:
        options.insert(0, dashboard_model.VariableOption(selected=True, text="All", value="$__all"))
    variable = (
        dashboard.CustomVariable(name)
        .label(label)
        .hide(dashboard_model.VariableHide.DONT_HIDE)
        .description(description)
        .values(",".join(values))
        .include_all(include_all)
        .multi(multi)
        .options(options)
        .current(_all(multi) if include_all else dashboard_model.VariableOption(text=values[0], value=values[0]))
    )
    if all_value is not None:
        variable.all_value(all_value)
    return variable


def textbox_variable(name: str, label: str, default: str, *, description: str = "") -> dashboard.TextBoxVariable:
    return (
        dashboard.TextBoxVariable(name)
        .label(label)
        .hide(dashboard_model.VariableHide.DONT_HIDE)
        .description(description)
        .default_value(default)
        .current(dashboard_model.VariableOption(text=default, value=default))
        .options([dashboard_model.VariableOption(selected=True, text=default, value=default)])
    )


def constant_variable(name: str, value: str, *, description: str = "") -> dashboard.ConstantVariable:
    """A hidden value the queries share (Grafana does not show constants on the dashboard)."""
    variable = dashboard.ConstantVariable(name).label(name).description(description).value(value)
    # The constant builder has no setters for current and options; the SDK's variable model has both.
    model = variable.build()
    model.current = dashboard_model.VariableOption(text=value, value=value)
    model.options = [dashboard_model.VariableOption(selected=True, text=value, value=value)]
    return variable


def _all(multi: bool) -> dashboard_model.VariableOption:
    if multi:
        return dashboard_model.VariableOption(text=["All"], value=["$__all"])
    return dashboard_model.VariableOption(text="All", value="$__all")


# --- annotations ---


def built_in_annotations() -> dashboard.AnnotationQuery:
    """Grafana's own "Annotations & Alerts" entry (annotations saved in Grafana, alert state changes),
    first on every dashboard and hidden from its controls, as Grafana writes it."""
    return (
        dashboard.AnnotationQuery()
        .name("Annotations & Alerts")
        .built_in(1)
        .datasource(dashboard_model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
        .target(dashboard.AnnotationTarget().limit(100).match_any(False).tags([]).type("dashboard"))
    )


def annotation(name: str, query: str, color: str) -> dashboard.AnnotationQuery:
    """Events drawn on every time series panel: the query returns ``time``, ``timeend``, ``text``, ``tags``."""
    return (
        dashboard.AnnotationQuery()
        .name(name)
        .datasource(postgres.datasource())
        .enable(True)
        .hide(False)
        .icon_color(color)
        .target(postgres.AnnotationTarget(query))
    )


# --- field configuration ---


def thresholds(base: str, *steps: tuple[float, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds: ``base`` below the first step, then each step's colour from its value up."""
    return (dashboard.ThresholdsConfig().mode(dashboard_model.ThresholdsMode.ABSOLUTE)
            .steps([dashboard_model.Threshold(value=None, color=base),
                    *(dashboard_model.Threshold(value=value, color=color) for value, color in steps)]))


def fixed_color(color: str) -> dashboard.FieldColor:
    return dashboard.FieldColor().mode(dashboard_model.FieldColorModeId.FIXED).fixed_color(color)


def threshold_colors() -> dashboard.FieldColor:
    return dashboard.FieldColor().mode(dashboard_model.FieldColorModeId.THRESHOLDS)


def palette() -> dashboard.FieldColor:
    return dashboard.FieldColor().mode(dashboard_model.FieldColorModeId.PALETTE_CLASSIC)


def value_colors(colors: dict[str, str]) -> list[dashboard_model.ValueMapping]:
    """Value mappings that give each text value its colour (and keep the text)."""
    return [dashboard_model.ValueMap(options={value: dashboard_model.ValueMappingResult(color=color, index=index)
                                              for index, (value, color) in enumerate(colors.items())})]


def link(title: str, url: str, *, new_tab: bool = False) -> dashboard.DashboardLink:
    """A data link. (The SDK's schema types field links as dashboard links, so the JSON also carries a
    dashboard link's other fields, at their defaults; Grafana reads title, url and targetBlank.)"""
    return dashboard.DashboardLink(title).url(url).target_blank(new_tab)


# --- panels ---


def _targets(queries: Sequence[postgres.Query],
             fmt: postgres.Format | None = None) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    """The panel's queries, with refIds A, B, … in order (``fmt``: set the format of each)."""
    out: list[cogbuilder.Builder[cogvariants.Dataquery]] = []
    for index, query in enumerate(queries):
        if fmt is not None:
            query.format(fmt)
        out.append(query.ref_id(chr(ord("A") + index)))
    return out


def legend() -> common.VizLegendOptions:
    return (common.VizLegendOptions().display_mode(common_model.LegendDisplayMode.LIST)
            .placement(common_model.LegendPlacement.BOTTOM).show_legend(True).calcs([]))


def tooltip() -> common.VizTooltipOptions:
    return common.VizTooltipOptions().mode(common_model.TooltipDisplayMode.MULTI).sort(common_model.SortOrder.NONE)


def timeseries_panel(title: str, query: str, *, unit: str, width: int = 12, height: int = 8,
                     description: str = "", fill: int = 10, decimals: float | None = None) -> timeseries.Panel:
    """Lines over time; the query returns ``time`` and numbers (or ``time``, ``metric``, ``value``)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(postgres.datasource())
        .targets(_targets([postgres.Query(query)], postgres.Format.TIME_SERIES))
        .span(width)
        .height(height)
        .legend(legend())
        .tooltip(tooltip())
        .unit(unit)
        .color_scheme(palette())
        .draw_style(common_model.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(fill)
        .show_points(common_model.VisibilityMode.NEVER)
        .span_nulls(False)
        .axis_placement(common_model.AxisPlacement.AUTO)
        .line_interpolation(common_model.LineInterpolation.LINEAR)
    )
    if decimals is not None:
        panel.decimals(decimals)
    return panel


def stat_panel(title: str, query: str, *, width: int, height: int, description: str = "", fields: str = "",
               color_mode: common_model.BigValueColorMode = common_model.BigValueColorMode.BACKGROUND,
               text_mode: common_model.BigValueTextMode = common_model.BigValueTextMode.VALUE_AND_NAME,
               orientation: common_model.VizOrientation = common_model.VizOrientation.AUTO) -> stat.Panel:
    """The last value of each column (``fields``: a regex of the columns to show; default all numbers)."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(postgres.datasource())
        .targets(_targets([postgres.Query(query)]))
        .span(width)
        .height(height)
        .reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields(fields))
        .color_mode(color_mode)
        .graph_mode(common_model.BigValueGraphMode.NONE)
        .justify_mode(common_model.BigValueJustifyMode.AUTO)
        .text_mode(text_mode)
        .wide_layout(True)
        .show_percent_change(False)
        .orientation(orientation)
    )


def table_panel(title: str, query: str, *, width: int, height: int, description: str = "",
                filterable: bool = False) -> table.Panel:
    """Rows as they come (the query orders them); ``filterable``: every column can be filtered by value
    from its header.

    The footer (hidden) has no ``fields``: the SDK's schema types it as a list of field names, where
    Grafana saves ``""`` (all numeric fields); hidden, it is not used either way.
    """
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(postgres.datasource())
        .targets(_targets([postgres.Query(query)]))
        .span(width)
        .height(height)
        .show_header(True)
        .cell_height(common_model.TableCellHeight.SM)
        .footer(common.TableFooterOptions().show(False).reducer(["sum"]).count_rows(False))
    )
    if filterable:
        panel.align(common_model.FieldTextAlignment.AUTO)
        panel.cell_options(common_model.TableAutoCellOptions())
        panel.filterable(True)
    return panel


def barchart_panel(title: str, query: str, *, x_field: str, stacking: common_model.StackingMode, width: int,
                   height: int, description: str = "") -> barchart.Panel:
    """Horizontal bars, one group per value of ``x_field``.

    The SDK always writes ``xTickLabelMaxLength: 0`` (a required number in its schema). Grafana
    shortens category labels to it on vertical bar charts only, where 0 would cut every label to
    "...": keep these horizontal, or give it a length.
    """
    return (
        barchart.Panel()
        .title(title)
        .description(description)
        .datasource(postgres.datasource())
        .targets(_targets([postgres.Query(query)]))
        .span(width)
        .height(height)
        .x_field(x_field)
        .orientation(common_model.VizOrientation.HORIZONTAL)
        .stacking(stacking)
        .show_value(common_model.VisibilityMode.AUTO)
        .bar_width(0.8)
        .group_width(0.7)
        .x_tick_label_rotation(0)
        .legend(legend())
        .tooltip(tooltip())
        .color_scheme(palette())
        .fill_opacity(85)
        .line_width(0)
    )


def geomap_panel(title: str, queries: Sequence[str], layers: Sequence[common.MapLayerOptions], *, width: int,
                 height: int, description: str = "", zoom: int = 4) -> geomap.Panel:
    """A map fitted to its layers. (A fitted view does not use the view's lat/lon, kept for an editor
    who switches it to coordinates; the SDK's schema types them as whole degrees: 48° N 9° E.)"""
    return (
        geomap.Panel()
        .title(title)
        .description(description)
        .datasource(postgres.datasource())
        .targets(_targets([postgres.Query(q) for q in queries]))
        .span(width)
        .height(height)
        .basemap(common.MapLayerOptions().type("default").name("Basemap").config({}))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(True).show_attribution(True)
                  .show_scale(True).show_measure(False).show_debug(False))
        .tooltip(geomap.TooltipOptions().mode(geomap_model.TooltipMode.DETAILS))
        .view(geomap.MapViewConfig().id(geomap_model.MapCenterID.FIT).lat(48).lon(9).zoom(zoom).all_layers(True))
        .layers(list(layers))
    )


def markers_layer(name: str, *, color_field: str | None = None, fixed: str = "blue", size: int = 6,
                  text_field: str | None = None, ref_id: str | None = None) -> common.MapLayerOptions:
    """A Geomap markers layer placed by the ``lat``/``lon`` columns (of query ``ref_id``, else the
    first). The SDK's schema leaves a layer's ``config`` untyped; its style is built from the SDK's
    dimension types."""
    style: Json = {
        "color": common_model.ColorDimensionConfig(fixed=fixed, field=color_field),
        "opacity": 0.85,
        "size": common_model.ScaleDimensionConfig(fixed=size, min_val=2, max_val=15),
        "symbol": common_model.ResourceDimensionConfig(mode=common_model.ResourceDimensionMode.FIXED,
                                                       fixed="img/icons/marker/circle.svg"),
        "rotation": common_model.ScalarDimensionConfig(fixed=0, min_val=-360, max_val=360,
                                                       mode=common_model.ScalarDimensionMode.MOD),
        "textConfig": {"fontSize": 11, "offsetX": 0, "offsetY": -12, "textAlign": "center",
                       "textBaseline": "middle"},
    }
    if text_field:
        style["text"] = common_model.TextDimensionConfig(mode=common_model.TextDimensionMode.FIELD, field=text_field,
                                                         fixed="")
    layer = (
        common.MapLayerOptions()
        .type("markers")
        .name(name)
        .tooltip(True)
        .location(common.FrameGeometrySource().mode(common_model.FrameGeometrySourceMode.COORDS)
                  .latitude("lat").longitude("lon"))
        .config({"showLegend": color_field is not None, "style": style})
    )
    if ref_id is not None:
        layer.filter_data({"id": "byRefId", "options": ref_id})
    return layer
