"""Variables, links and panels that several dashboards share."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common, dashboard, timeseries
from grafana_foundation_sdk.models import common as common_model

from dashboards import blocks, props
from dashboards.sql import ALL_VALUE, OFFLINE_AFTER_S, SEVERITY_COLORS, any_of

FLEET_UID = "ironsight-fleet"
MACHINE_UID = "ironsight-machine"
ALARMS_UID = "ironsight-alarms"
WORK_ORDERS_UID = "ironsight-work-orders"
HEALTH_UID = "ironsight-health"
CALLER_UID = "ironsight-caller"

DEFAULT_API_URL = "http://localhost:8000"


def customer_variable(*, multi: bool) -> dashboard.QueryVariable:
    return blocks.query_variable(
        "customer", "Customer", "SELECT DISTINCT customer FROM equipment ORDER BY 1",
        include_all=True, multi=multi, all_value=ALL_VALUE,
        description="Equipment owner (the fleet register's customer)")


def equipment_variable() -> dashboard.QueryVariable:
    """One machine of the chosen customer(s), shown as id · model · site."""
    return blocks.query_variable(
        "equipment", "Machine",
        f"""
        SELECT e.id AS __value, e.id || ' · ' || e.model || coalesce(' · ' || e.site, '') AS __text
        FROM equipment e
        WHERE {any_of('customer', 'e.customer')}
        ORDER BY e.id
        """,
        description="The machine to look at; the list follows the customer")


def api_url_variable() -> dashboard.TextBoxVariable:
    return blocks.textbox_variable("api_url", "IronSight API", DEFAULT_API_URL,
                                   description="Base URL of the IronSight API as the dispatcher's browser reaches it")


def offline_after_variable() -> dashboard.ConstantVariable:
    return blocks.constant_variable("offline_after_s", repr(OFFLINE_AFTER_S).removesuffix(".0"),
                                    description="Seconds of silence after which a machine shows offline "
                                                "(IRONSIGHT_OFFLINE_AFTER_S)")


def machine_link(equipment_field: str = "equipment_id", customer_field: str = "customer") -> dashboard.DashboardLink:
    """Data link from a row to the machine drill-down, keeping the time range."""
    return blocks.link("Machine drill-down",
                       f"/d/{MACHINE_UID}/machine?var-customer=${{__data.fields.{customer_field}:percentencode}}"
                       f"&var-equipment=${{__data.fields.{equipment_field}:percentencode}}&${{__url_time_range}}")


def api_alarms_link(equipment_field: str = "equipment_id") -> dashboard.DashboardLink:
    return blocks.link("Alarms of this machine (API)",
                       f"${{api_url}}/api/v1/alarms?equipment_id=${{__data.fields.{equipment_field}:percentencode}}",
                       new_tab=True)


def api_ticket_link(ticket_field: str) -> dashboard.DashboardLink:
    return blocks.link("Work order (API)", f"${{api_url}}/api/v1/tickets/${{__data.fields.{ticket_field}}}",
                       new_tab=True)


def api_open_ticket_link() -> dashboard.DashboardLink:
    """The API's own docs for POST /api/v1/tickets (Swagger UI: tag, then operation id)."""
    return blocks.link("Open a work order (POST /api/v1/tickets)",
                       "${api_url}/docs#/tickets/create_ticket_api_v1_tickets_post", new_tab=True)


def severity_bars(title: str, sql: str) -> timeseries.Panel:
    """Counts over time as bars stacked by severity (the query returns time, metric = severity, value)."""
    panel = (
        blocks.timeseries_panel(title, sql, unit="short", width=12, height=8)
        .draw_style(common_model.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(common.StackingConfig().mode(common_model.StackingMode.NORMAL).group("A"))
    )
    for severity, color in SEVERITY_COLORS.items():
        panel.override_by_name(severity, [props.color(color)])
    return panel
