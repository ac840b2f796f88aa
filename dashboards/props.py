"""Field override properties, for the SDK's ``.override_by_name(name, [props.unit("s"), …])``.

Each is a ``DynamicConfigValue`` (Grafana's override property: an id and a value) whose value is an
SDK type where the SDK has one (colours, thresholds, mappings, links, cell options, line styles).
"""

from __future__ import annotations

from typing import Literal

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

from dashboards import blocks

Property = dashboard_model.DynamicConfigValue


def unit(name: str) -> Property:
    return Property(id_val="unit", value=name)


def decimals(count: int) -> Property:
    return Property(id_val="decimals", value=count)


def min_value(value: float) -> Property:
    return Property(id_val="min", value=value)


def max_value(value: float) -> Property:
    return Property(id_val="max", value=value)


def display_name(name: str) -> Property:
    return Property(id_val="displayName", value=name)


def color(fixed: str) -> Property:
    """One fixed colour."""
    return Property(id_val="color", value=blocks.fixed_color(fixed).build())


def threshold_colors() -> Property:
    """Colour by the field's thresholds."""
    return Property(id_val="color", value=blocks.threshold_colors().build())


def thresholds(base: str, *steps: tuple[float, str]) -> Property:
    return Property(id_val="thresholds", value=blocks.thresholds(base, *steps).build())


def value_colors(colors: dict[str, str]) -> Property:
    return Property(id_val="mappings", value=blocks.value_colors(colors))


def links(*items: dashboard.DashboardLink) -> Property:
    return Property(id_val="links", value=[item.build() for item in items])


def cell(options: common_model.TableCellOptions) -> Property:
    """How a table column draws its cells."""
    return Property(id_val="custom.cellOptions", value=options)


def color_text() -> Property:
    return cell(common_model.TableColorTextCellOptions())


def color_background() -> Property:
    return cell(common_model.TableColoredBackgroundCellOptions())


def width(pixels: int) -> Property:
    return Property(id_val="custom.width", value=pixels)


def hidden() -> Property:
    return Property(id_val="custom.hidden", value=True)


def fill_opacity(percent: int) -> Property:
    return Property(id_val="custom.fillOpacity", value=percent)


def line_width(pixels: int) -> Property:
    return Property(id_val="custom.lineWidth", value=pixels)


def line_style(fill: Literal["solid", "dash", "dot", "square"], dash: list[float] | None = None) -> Property:
    return Property(id_val="custom.lineStyle", value=common_model.LineStyle(fill=fill, dash=dash))


def dashed_limit(limit_color: str = "red") -> list[Property]:
    """A series drawn as a dashed line without fill: a rule's limit."""
    return [color(limit_color), fill_opacity(0), line_width(2), line_style("dash", [10, 10])]
