"""Caller: the front desk's screen when the phone rings. The dispatcher types or pastes the caller's
number, in any spelling, and sees who is calling, their customer and contract, the customer's machines
as they are now, what is wrong with them and what to try, the open work orders and the recent calls.

The same picture as the API's ``GET /api/v1/calls/lookup`` (api/routers/calls.py), matched the same
way as its partial match: the number's digits, without leading zeros, are the end of a stored E.164
number (a number in E.164 or ``00`` form ends with all of it; a national number drops the country
code and the trunk 0). When several numbers match, the shortest wins, then the oldest contact, as in
the API. The national reading of a number in the deployment's region (``IRONSIGHT_PHONE_REGION``),
which the API tries first, is not made here: a national number that ends two stored numbers of the
same length in different countries picks the older contact.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import geomap, table
from grafana_foundation_sdk.builders.dashboard import Row
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

from core.customers import MIN_PARTIAL_DIGITS
from dashboards import blocks, props
from dashboards.common import (
    ALARMS_UID,
    CALLER_UID,
    FLEET_UID,
    WORK_ORDERS_UID,
    api_alarms_link,
    api_open_ticket_link,
    api_ticket_link,
    api_url_variable,
    machine_link,
    offline_after_variable,
)
from dashboards.sql import OPEN_TICKET, SEVERITY_COLORS, STATE_COLORS, fleet_state, remedy_steps, severity_rank

# Ofcom keeps 07700 900000–900999 for drama: the default matches no real caller (the tests give a
# contact this number).
DEFAULT_PHONE = "+44 7700 900123"

# Grafana substitutes a single-value variable with its quotes doubled: a typed number stays a literal.
# A constant expression, folded before planning, so the match uses contact_phones' reversed index.
_DIGITS = r"ltrim(regexp_replace('$phone', '\D', '', 'g'), '0')"
_MATCHES = f"""
    SELECT c.id AS contact_id, c.customer_id, p.e164
    FROM contact_phones p
    JOIN customer_contacts c ON c.id = p.contact_id
    WHERE reverse(p.e164) LIKE reverse({_DIGITS}) || '%' AND length({_DIGITS}) >= {MIN_PARTIAL_DIGITS}"""
_CALLER = f"""({_MATCHES}
    ORDER BY length(p.e164), c.id
    LIMIT 1)"""
CUSTOMER = f"(SELECT customer_id FROM {_CALLER} caller)"

CUSTOMERS_MACHINES = fleet_state(f"e.customer = {CUSTOMER}")


def _api_lookup_link() -> dashboard_builder.DashboardLink:
    return blocks.link("Caller on screen (API)", "${api_url}/api/v1/calls/lookup?phone=${phone:percentencode}",
                       new_tab=True)


def _api_record_call_link() -> dashboard_builder.DashboardLink:
    """The API's own docs for POST /api/v1/calls (Swagger UI: tag, then operation id)."""
    return blocks.link("Record the call (POST /api/v1/calls)", "${api_url}/docs#/calls/record_api_v1_calls_post",
                       new_tab=True)


def _customer_links(customer_field: str) -> list[dashboard_builder.DashboardLink]:
    value = f"${{__data.fields.{customer_field}:percentencode}}"
    return [blocks.link(f"{title} of this customer", f"/d/{uid}/{slug}?var-customer={value}&${{__url_time_range}}")
            for title, uid, slug in (("Fleet map", FLEET_UID, "fleet"), ("Alarms", ALARMS_UID, "alarms"),
                                     ("Work orders", WORK_ORDERS_UID, "work-orders"))]


def caller() -> table.Panel:
    return (
        blocks.table_panel("Caller", f"""
SELECT cc.name AS "caller", cc.role, cu.name AS "customer", cc.preferred_channel AS "preferred channel",
       cc.language, cc.email,
       array_to_string(ARRAY(SELECT p.e164 FROM contact_phones p WHERE p.contact_id = cc.id ORDER BY p.e164),
                       ', ') AS "numbers",
       caller.e164 AS "matched number",
       (SELECT count(DISTINCT m.contact_id) FROM ({_MATCHES}) m) AS "contacts matching"
FROM {_CALLER} caller
JOIN customer_contacts cc ON cc.id = caller.contact_id
JOIN customers cu ON cu.id = caller.customer_id""", width=12, height=5,
                           description="The contact whose number ends with the digits typed (a number in any "
                                       "spelling; at least " + str(MIN_PARTIAL_DIGITS) + " digits), as the API's "
                                       "lookup finds it. 'contacts matching' above 1: the number is not unique, "
                                       "ask who is calling.")
        .override_by_name("caller", [props.links(_api_lookup_link(), _api_record_call_link())])
        .override_by_name("contacts matching", [props.threshold_colors(), props.color_text(),
                                                props.thresholds("green", (2, "orange"))])
    )


def customer() -> table.Panel:
    return (
        blocks.table_panel("Customer and contract", f"""
SELECT cu.id AS "customer_id", cu.name AS "customer", cu.contract_number AS "contract", cu.contract_until AS "until",
       cu.tier,
       coalesce(l.respond_h, t.respond_h) AS "respond h", t.arrive_h AS "arrive h",
       coalesce(l.resolve_h, t.resolve_h) AS "resolve h", t.remote_diagnosis_min AS "remote diagnosis min",
       (SELECT string_agg(k.kind || ': respond ' || k.respond_h || ' h, resolve ' || k.resolve_h || ' h', '; '
                          ORDER BY k.kind)
        FROM contract_tier_limits k WHERE k.tier = t.name) AS "limits by request",
       cu.notes
FROM customers cu
LEFT JOIN contract_tiers t ON t.name = cu.tier
LEFT JOIN contract_tier_limits l ON l.tier = t.name AND l.kind = 'fault'
WHERE cu.id = {CUSTOMER}""", width=12, height=5,
                           description="The customer's contract: its tier and the tier's time limits for a fault "
                                       "(respond, arrive, resolve; remote diagnosis in minutes), and the limits the "
                                       "tier sets for other kinds of request. Without a tier the limits are blank "
                                       "and IronSight's default limits apply.")
        .override_by_name("customer_id", [props.hidden()])
        .override_by_name("customer", [props.links(*_customer_links("customer_id"))])
    )


def machines_map() -> geomap.Panel:
    return (
        blocks.geomap_panel("The customer's machines", [CUSTOMERS_MACHINES + """
SELECT equipment_id, model, customer, site, state, worst_severity AS "worst alarm", lat, lon,
       round(oil_temp_c::numeric, 1) AS "oil °C", round(engine_rpm::numeric) AS rpm,
       round(fuel_level_pct::numeric) AS "fuel %", last_received_at AS "last report"
FROM fleet
WHERE lat IS NOT NULL AND lon IS NOT NULL
ORDER BY equipment_id"""],
                            [blocks.markers_layer("Machines", color_field="state", size=8, text_field="equipment_id")],
                            width=10, height=12, zoom=6,
                            description="Each machine of the customer at its last reported position, coloured by "
                                        "state as on the fleet map. Click a machine for its drill-down.")
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("blue"))
        .data_links([machine_link()])
        .override_by_name("state", [props.value_colors(STATE_COLORS)])
    )


def machines() -> table.Panel:
    return (
        blocks.table_panel("Machines now", CUSTOMERS_MACHINES + f"""
SELECT f.equipment_id, f.customer, f.state, f.online, f.model, f.site,
       round(f.oil_temp_c::numeric, 1) AS "oil °C", round(f.engine_rpm::numeric) AS rpm,
       round(f.hydraulic_pressure_bar::numeric, 1) AS "hydraulic bar", round(f.fuel_level_pct::numeric) AS "fuel %",
       round(f.engine_hours::numeric, 1) AS "engine hours", f.last_received_at AS "last report",
       f.active_alarms AS "active alarms", f.worst_severity AS "worst alarm",
       (SELECT count(*) FROM tickets t WHERE t.equipment_id = f.equipment_id AND {OPEN_TICKET}) AS "open work orders"
FROM fleet f
ORDER BY f.active_alarms = 0, f.equipment_id""", width=14, height=12, filterable=True,
                           description="The customer's machines with their latest reading, those in alarm first. "
                                       "'online': reported within the offline limit, and the controller has not "
                                       "said goodbye since (as the API's online).")
        .override_by_name("equipment_id", [props.display_name("machine"),
                                           props.links(machine_link(), api_alarms_link())])
        .override_by_name("customer", [props.hidden()])
        .override_by_name("state", [props.value_colors(STATE_COLORS), props.color_text()])
        .override_by_name("worst alarm", [props.value_colors(SEVERITY_COLORS), props.color_text()])
        .override_by_name("last report", [props.unit("dateTimeFromNow")])
    )


def alarms() -> table.Panel:
    return (
        blocks.table_panel("Active alarms: the most probable cause and what to try", f"""
SELECT a.id AS "alarm", a.raised_at AS "raised", a.severity, a.fault_code AS "fault",
       coalesce(f.title, f.diagnosis ->> 'title') AS "what", a.equipment_id, e.customer,
       a.acknowledged_at IS NOT NULL AS "acknowledged", a.occurrences,
       mp.cause ->> 'title' AS "most probable cause",
       (mp.cause ->> 'probability')::float AS "probability",
       {remedy_steps('mp.cause')} AS "remedy",
       (f.diagnosis ->> 'remote_resolvable')::boolean AS "remote fix likely",
       f.diagnosis ->> 'spare_part' AS "spare part",
       a.ticket_id AS "ticket"
FROM alarms a
JOIN equipment e ON e.id = a.equipment_id
LEFT JOIN faults f ON f.id = a.last_fault_id
CROSS JOIN LATERAL (SELECT f.diagnosis -> 'causes' -> 0 AS cause) mp
WHERE a.state = 'active' AND e.customer = {CUSTOMER}
ORDER BY {severity_rank('a.severity')}, a.raised_at""", width=24, height=10,
                           description="Every active alarm of the customer's machines, worst and oldest first, with "
                                       "the diagnosis's most probable cause and its remedy steps to walk the caller "
                                       "through; whether it is likely fixed remotely, and otherwise the spare part a "
                                       "visit needs. The machine's drill-down has every cause.")
        .align(common_model.FieldTextAlignment.AUTO)
        .cell_options(common_model.TableAutoCellOptions(wrap_text=True))
        .inspect(True)
        .override_by_name("alarm", [props.links(api_alarms_link(), api_open_ticket_link()), props.width(70)])
        .override_by_name("raised", [props.unit("dateTimeAsIso"), props.width(150)])
        .override_by_name("severity", [props.value_colors(SEVERITY_COLORS), props.color_background(),
                                       props.width(90)])
        .override_by_name("equipment_id", [props.display_name("machine"), props.links(machine_link())])
        .override_by_name("customer", [props.hidden()])
        .override_by_name("probability", [props.unit("percentunit"), props.decimals(0), props.width(90)])
        .override_by_name("remedy", [props.width(420)])
        .override_by_name("ticket", [props.links(api_ticket_link("ticket")), props.width(70)])
    )


def work_orders() -> table.Panel:
    return (
        blocks.table_panel("Open work orders", f"""
SELECT t.id AS "ticket", t.created_at AS "opened", t.priority, t.kind, t.channel, t.state, t.equipment_id,
       e.customer, t.title, cc.name AS "contact", t.engineer,
       t.respond_by AS "respond by", t.arrive_by AS "arrive by", t.resolve_by AS "resolve by", t.eta
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
LEFT JOIN customer_contacts cc ON cc.id = t.contact_id
WHERE {OPEN_TICKET} AND e.customer = {CUSTOMER}
ORDER BY {severity_rank('t.priority')}, t.created_at""", width=24, height=7,
                           description="The customer's work orders not yet closed, rejected or cancelled, highest "
                                       "priority and oldest first: what kind of request, how it came in, where it "
                                       "stands, and the contract's deadlines (arrival once dispatched; the van's "
                                       "ETA while it drives).")
        .override_by_name("ticket", [props.links(api_ticket_link("ticket")), props.width(70)])
        .override_by_name("opened", [props.unit("dateTimeAsIso")])
        .override_by_name("priority", [props.value_colors(SEVERITY_COLORS), props.color_background(),
                                       props.width(90)])
        .override_by_name("equipment_id", [props.display_name("machine"), props.links(machine_link())])
        .override_by_name("customer", [props.hidden()])
        .override_by_name("respond by", [props.unit("dateTimeAsIso")])
        .override_by_name("arrive by", [props.unit("dateTimeAsIso")])
        .override_by_name("resolve by", [props.unit("dateTimeAsIso")])
        .override_by_name("eta", [props.unit("dateTimeAsIso")])
    )


def recent_calls() -> table.Panel:
    return (
        blocks.table_panel("The customer's calls in the time range", f"""
SELECT c.started_at AS "started", extract(epoch FROM c.ended_at - c.started_at) AS "lasted",
       c.phone AS "number", cc.name AS "contact", c.equipment_id, c.customer_id AS "customer", c.agent, c.source,
       c.outcome, c.ticket_id AS "ticket", c.notes
FROM calls c
LEFT JOIN customer_contacts cc ON cc.id = c.contact_id
WHERE c.customer_id = {CUSTOMER} AND $__timeFilter(c.started_at)
ORDER BY c.started_at DESC, c.id DESC
LIMIT 100""", width=24, height=7,
                           description="Calls from the customer's contacts, newest first: the number as the line "
                                       "gave it, who answered, and what came of it.")
        .override_by_name("started", [props.unit("dateTimeAsIso")])
        .override_by_name("lasted", [props.unit("s")])
        .override_by_name("equipment_id", [props.display_name("machine"), props.links(machine_link())])
        .override_by_name("customer", [props.hidden()])
        .override_by_name("ticket", [props.links(api_ticket_link("ticket"))])
    )


def dashboard() -> dashboard_model.Dashboard:
    return blocks.make_dashboard(
        CALLER_UID,
        "IronSight · Caller",
        "The front desk when the phone rings: who is calling, their customer and contract, the customer's "
        "machines now, active alarms with what to try, open work orders and recent calls.",
        variables=[blocks.textbox_variable("phone", "Phone", DEFAULT_PHONE,
                                           description="The caller's number in any spelling: +31 20 123 4567, "
                                                       "0031 20-1234567, 020 123 4567, or its last digits"),
                   api_url_variable(), offline_after_variable()],
        time_from="now-30d",
        refresh="1m",
        tags=("front desk",),
        panels=[caller(), customer(), machines_map(), machines(), Row("What is wrong, and what is being done"),
                alarms(), work_orders(), recent_calls()],
    )
