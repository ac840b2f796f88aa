"""Variables and links that several dashboards share."""

from __future__ import annotations

from dashboards.model import (
    ConstantVariable,
    Panel,
    Query,
    QueryVariable,
    TextboxVariable,
    fixed_color,
    link,
    override,
    timeseries_defaults,
    timeseries_options,
)
from dashboards.sql import ALL_VALUE, OFFLINE_AFTER_S, SEVERITY_COLORS, any_of

FLEET_UID = "ironsight-fleet"
MACHINE_UID = "ironsight-machine"
ALARMS_UID = "ironsight-alarms"
WORK_ORDERS_UID = "ironsight-work-orders"

DEFAULT_API_URL = "http://localhost:8000"


def customer_variable(*, multi: bool) -> QueryVariable:
    return QueryVariable(
        "customer", "Customer", "SELECT DISTINCT customer FROM equipment ORDER BY 1",
        include_all=True, multi=multi, all_value=ALL_VALUE,
        description="Equipment owner (the fleet register's customer)")


def equipment_variable() -> QueryVariable:
    """One machine of the chosen customer(s), shown as id · model · site."""
    return QueryVariable(
        "equipment", "Machine",
        f"""
        SELECT e.id AS __value, e.id || ' · ' || e.model || coalesce(' · ' || e.site, '') AS __text
        FROM equipment e
        WHERE {any_of('customer', 'e.customer')}
        ORDER BY e.id
        """,
        description="The machine to look at; the list follows the customer")


def api_url_variable() -> TextboxVariable:
    return TextboxVariable("api_url", "IronSight API", DEFAULT_API_URL,
                           description="Base URL of the IronSight API as the dispatcher's browser reaches it")


def offline_after_variable() -> ConstantVariable:
    return ConstantVariable("offline_after_s", repr(OFFLINE_AFTER_S).removesuffix(".0"),
                            description="Seconds of silence after which a machine shows offline "
                                        "(IRONSIGHT_OFFLINE_AFTER_S)")


def machine_link(equipment_field: str = "equipment_id", customer_field: str = "customer") -> dict:
    """Data link from a row to the machine drill-down, keeping the time range."""
    return link("Machine drill-down",
                f"/d/{MACHINE_UID}/machine?var-customer=${{__data.fields.{customer_field}:percentencode}}"
                f"&var-equipment=${{__data.fields.{equipment_field}:percentencode}}&${{__url_time_range}}")


def api_alarms_link(equipment_field: str = "equipment_id") -> dict:
    return link("Alarms of this machine (API)",
                f"${{api_url}}/api/v1/alarms?equipment_id=${{__data.fields.{equipment_field}:percentencode}}",
                new_tab=True)


def api_ticket_link(ticket_field: str) -> dict:
    return link("Work order (API)", f"${{api_url}}/api/v1/tickets/${{__data.fields.{ticket_field}}}", new_tab=True)


def api_open_ticket_link() -> dict:
    """The API's own docs for POST /api/v1/tickets (Swagger UI: tag, then operation id)."""
    return link("Open a work order (POST /api/v1/tickets)",
                "${api_url}/docs#/tickets/create_ticket_api_v1_tickets_post", new_tab=True)


def severity_bars(title: str, sql: str) -> Panel:
    """Counts over time as bars stacked by severity (the query returns time, metric = severity, value)."""
    defaults = timeseries_defaults("short")
    return Panel(
        "timeseries", title, [Query(sql, "time_series")],
        width=12, height=8,
        options=timeseries_options(),
        defaults={**defaults, "custom": {**defaults["custom"], "drawStyle": "bars", "fillOpacity": 80,
                                         "stacking": {"mode": "normal", "group": "A"}}},
        overrides=[override(s, ("color", fixed_color(c))) for s, c in SEVERITY_COLORS.items()],
    )
