"""The fault catalogue: what each fault means, its probable causes, and what to do about them.

Data, versioned with the code. Each cause carries the remedy steps a dispatcher can walk a
customer through on the phone, whether that usually solves it remotely, and, when a visit is
needed, the spare part the engineer should bring. ``indicators`` are the evidence that makes a
cause more likely (see diagnostics.causes); ``prior`` is how common the cause is among fleets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

CATALOGUE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Indicator:
    """Evidence for a cause: ``statistic`` (see diagnostics.evidence) compared with ``value``."""

    statistic: str
    op: str  # ">" or "<"
    value: float
    weight: float
    meaning: str


@dataclass(frozen=True, slots=True)
class Cause:
    id: str
    title: str
    remedy: tuple[str, ...]
    remote_resolvable: bool
    spare_part: str | None = None
    prior: float = 0.1
    indicators: tuple[Indicator, ...] = ()


@dataclass(frozen=True, slots=True)
class FaultInfo:
    code: str
    title: str
    category: str  # machine | sensor | security | maintenance | connectivity
    causes: tuple[Cause, ...] = field(default_factory=tuple)


# The thermostat holds healthy coolant at 80-90 °C whatever the load: above that the radiator
# circuit is not shedding its heat either.
_COOLANT_HOT = Indicator("coolant_temp_c.now", ">", 92.0, 2.5, "coolant is hot as well")
_COOLANT_NORMAL = Indicator("coolant_temp_c.now", "<", 91.0, 2.5, "coolant stays normal")
# A clogged radiator first shows as coolant climbing inside the thermostat's band (the thermostat
# opens fully to make up for it) before the coolant runs hot; an oil cooler fault leaves the
# coolant where it was. Load changes move the setpoint by at most 8 °C × the load step, slowly.
_COOLANT_CLIMBING = Indicator("coolant_temp_c.rise", ">", 3.0, 2.5, "coolant is climbing as well")
_COOLANT_ERRATIC = Indicator("coolant_temp_c.jitter", ">", 2.0, 3.0, "coolant temperature is erratic")
_COOLANT_SMOOTH = Indicator("coolant_temp_c.jitter", "<", 1.5, 1.0, "coolant temperature is smooth")
# What the machine's own models say (diagnostics.models; ModelResidual.statistics): the thermostat
# opens further as the radiator loses capacity, so the coolant sits higher in its band than the model
# expects for the load and the air long before it runs hot; air in a circuit short of coolant makes
# the sensor noisier than the machine's healthy noise before anything else shows.
_COOLANT_ABOVE_MODEL = Indicator("coolant_temp_c.deviation_sigmas", ">", 3.0, 3.0,
                                 "coolant sits higher in the thermostat's band than its model expects")
_COOLANT_AT_MODEL = Indicator("coolant_temp_c.deviation_sigmas", "<", 2.5, 2.0,
                              "coolant is where its model expects")
_COOLANT_NOISY = Indicator("coolant_temp_c.jitter_ratio", ">", 1.3, 7.0, "coolant reads noisier than healthy")
_COOLANT_QUIET = Indicator("coolant_temp_c.jitter_ratio", "<", 1.2, 2.0, "coolant reads as steady as healthy")
# The oil and coolant models take the hydraulic pressure as a measure of the work done: when the
# pressure itself has dropped they expect too little heat, so oil and coolant above their models
# point at the cooling only while the pressure is where the machine's own model expects it.
_PRESSURE_AT_MODEL = Indicator("hydraulic_pressure_bar.deviation_sigmas", ">", -1.5, 2.0,
                               "working pressure is the machine's own")
_PRESSURE_BELOW_MODEL = Indicator("hydraulic_pressure_bar.deviation_sigmas", "<", -2.0, 7.0,
                                  "working pressure below the machine's own")
_PRESSURE_NOISY = Indicator("hydraulic_pressure_bar.jitter_ratio", ">", 1.15, 3.0,
                            "working pressure fluctuates more than healthy")
_PRESSURE_STEADY = Indicator("hydraulic_pressure_bar.jitter_ratio", "<", 1.1, 1.0,
                             "working pressure as steady as healthy")

_RADIATOR = Cause(
    "radiator_clogged", "Radiator fins clogged with dust or debris",
    ("Stop the engine and let it cool for 15 minutes.",
     "Blow the radiator and oil cooler fins clean with compressed air from the fan side.",
     "Restart and watch oil and coolant temperature under load for 10 minutes."),
    remote_resolvable=True, prior=0.35,
    indicators=(_COOLANT_HOT, _COOLANT_CLIMBING, _COOLANT_SMOOTH, _COOLANT_ABOVE_MODEL, _COOLANT_QUIET,
                _PRESSURE_AT_MODEL))
_OIL_COOLER = Cause(
    "oil_cooler_clogged", "Oil cooler clogged or its bypass valve stuck open",
    ("Clean the oil cooler core with compressed air.",
     "If the temperature stays high, the bypass valve needs replacing on site."),
    remote_resolvable=False, spare_part="oil cooler bypass valve", prior=0.25,
    indicators=(_COOLANT_NORMAL, _COOLANT_AT_MODEL, _COOLANT_QUIET, _PRESSURE_AT_MODEL))
_LOW_COOLANT = Cause(
    "low_coolant", "Coolant level low (leak or air in the circuit)",
    ("Stop the engine; when cool, check the coolant level in the expansion tank.",
     "Top up with the specified coolant and look for leaks at hoses and the water pump.",
     "Run at idle with the cap off for 5 minutes to bleed air."),
    remote_resolvable=True, spare_part="coolant hose set", prior=0.25,
    indicators=(_COOLANT_ERRATIC, _COOLANT_HOT, _COOLANT_NOISY))
_FAN_BELT = Cause(
    "fan_belt_slipping", "Fan belt slipping or broken",
    ("Stop the engine and check the fan belt tension and condition.",
     "Re-tension a loose belt; a cracked or glazed belt is replaced on site."),
    remote_resolvable=True, spare_part="fan belt", prior=0.15)

# Healthy working pressure jitters 4-6 bar (sensor noise and load changes): a worn pump keeps it
# there, a leak's sloshing at least doubles it, and a low-pressure alarm is raised while the jitter
# estimate is still climbing towards its final value, so the leak's threshold sits at 2x healthy.
_PUMP_WEAR = Cause(
    "hydraulic_pump_wear", "Main hydraulic pump worn (internal leakage)",
    ("Check the hydraulic oil level and the pump case drain for excess flow.",
     "Pump replacement on site."),
    remote_resolvable=False, spare_part="main hydraulic pump", prior=0.45,
    indicators=(Indicator("hydraulic_pressure_bar.jitter", "<", 7.0, 2.0, "pressure is low but steady"),
                _PRESSURE_STEADY))
_LEAK = Cause(
    "hydraulic_leak", "External hydraulic leak (hose or fitting)",
    ("Stop work and look for oil under the machine and at the boom hoses.",
     "Tighten a weeping fitting; a burst hose is replaced on site."),
    remote_resolvable=False, spare_part="hydraulic hose kit", prior=0.35,
    indicators=(Indicator("hydraulic_pressure_bar.jitter", ">", 8.0, 3.0, "pressure fluctuates strongly"),
                _PRESSURE_NOISY))
_RELIEF_VALVE = Cause(
    "relief_valve_misadjusted", "Main relief valve set too low",
    ("Read the relief pressure setting from the service menu and compare with the specification.",),
    remote_resolvable=True, prior=0.2)

# Oil or coolant hotter than its model expects on a machine whose working pressure has dropped: the model
# expected less heat from less pressure, but the engine still works as hard (a worn pump's internal
# leakage heats the oil too). Rare as a cause of hot oil, so only the pressure evidence names them.
_HOT_PUMP_WEAR = replace(_PUMP_WEAR, prior=0.1, indicators=(_PRESSURE_BELOW_MODEL, _PRESSURE_STEADY))
_HOT_LEAK = replace(_LEAK, prior=0.1, indicators=(_PRESSURE_BELOW_MODEL, _PRESSURE_NOISY))

FAULTS: dict[str, FaultInfo] = {f.code: f for f in (
    FaultInfo("OIL_OVERHEAT", "Oil temperature above limit", "machine",
              (_RADIATOR, _OIL_COOLER, _LOW_COOLANT, _FAN_BELT)),
    FaultInfo("OIL_TEMP_ABOVE_EXPECTED", "Oil hotter than the load explains (cooling degrading)", "machine",
              (_RADIATOR, _OIL_COOLER, _LOW_COOLANT, _FAN_BELT, _HOT_PUMP_WEAR, _HOT_LEAK)),
    FaultInfo("COOLANT_TEMP_ABOVE_EXPECTED", "Coolant higher than the load and the air explain", "machine",
              (_RADIATOR, _LOW_COOLANT, _FAN_BELT, _HOT_PUMP_WEAR, _HOT_LEAK)),
    FaultInfo("HYDRAULIC_PRESSURE_BELOW_EXPECTED", "Working pressure below the machine's own", "machine",
              (_PUMP_WEAR, _LEAK, _RELIEF_VALVE)),
    FaultInfo("OIL_TEMP_RISING_FAST", "Oil temperature rising fast at steady load", "machine",
              (_RADIATOR, _OIL_COOLER, _LOW_COOLANT, _FAN_BELT)),
    FaultInfo("COOLANT_OVERHEAT", "Coolant temperature above limit", "machine", (_RADIATOR, _LOW_COOLANT, _FAN_BELT)),
    FaultInfo("HYDRAULIC_PRESSURE_LOW", "Hydraulic pressure low while working", "machine",
              (_PUMP_WEAR, _LEAK, _RELIEF_VALVE)),
    FaultInfo("HYDRAULIC_PRESSURE_SPIKES", "Repeated hydraulic pressure spikes", "machine", (
        Cause("relief_valve_sticking", "Main relief valve sticking",
              ("Ask the operator to avoid dead-heading cylinders at end of stroke.",
               "Relief valve cleaning or replacement on site."),
              remote_resolvable=False, spare_part="main relief valve", prior=0.6),
        Cause("operator_technique", "Operator dead-heads cylinders at end of stroke",
              ("Brief the operator on smooth end-of-stroke handling.",), remote_resolvable=True, prior=0.4))),
    FaultInfo("SENSOR_STUCK", "Sensor reading frozen", "sensor", (
        Cause("sensor_failure", "Sensor or its connector failed",
              ("Ask the operator to check the sensor connector is seated and dry.",
               "Replace the sensor on site if the value stays frozen."),
              remote_resolvable=False, spare_part="temperature sensor", prior=0.7),
        Cause("controller_input", "Controller input channel fault",
              ("Power-cycle the controller.",), remote_resolvable=True, prior=0.3))),
    FaultInfo("SENSOR_IMPLAUSIBLE", "Sensor value physically implausible", "sensor", (
        Cause("sensor_failure", "Sensor or its wiring failed (open or short circuit)",
              ("Check the sensor connector and harness for damage.", "Replace the sensor on site."),
              remote_resolvable=False, spare_part="temperature sensor", prior=0.8),
        Cause("controller_input", "Controller input channel fault",
              ("Power-cycle the controller.",), remote_resolvable=True, prior=0.2))),
    FaultInfo("GPS_LOST", "No GPS position while reporting", "sensor", (
        Cause("gps_antenna", "GPS antenna damaged or disconnected",
              ("Ask the operator to check the antenna on the cab roof and its cable.",
               "Replace the antenna on site if it is damaged."),
              remote_resolvable=False, spare_part="GPS antenna", prior=0.6),
        Cause("gps_shadow", "Machine works under cover (tunnel, hall)",
              ("Confirm with the customer where the machine works.",), remote_resolvable=True, prior=0.4))),
    FaultInfo("OFFLINE", "Controller stopped reporting", "connectivity", (
        Cause("no_coverage", "No mobile coverage at the site",
              ("Check the coverage map; data is buffered and arrives when coverage returns.",),
              remote_resolvable=True, prior=0.5),
        Cause("controller_power", "Controller without power (battery disconnected, main switch off)",
              ("Ask the operator whether the battery isolator is off.",), remote_resolvable=True, prior=0.3),
        Cause("modem_failure", "Telematics modem failed",
              ("Modem replacement on site.",), remote_resolvable=False, spare_part="telematics modem", prior=0.2))),
    FaultInfo("GEOFENCE_EXIT", "Machine left its permitted area", "security", (
        Cause("unauthorized_relocation", "Unauthorised relocation or theft",
              ("Call the customer to confirm whether the move was planned.",
               "If not: notify the police with the live position and lock the machine remotely."),
              remote_resolvable=True, prior=0.6),
        Cause("unregistered_transfer", "Planned transfer not registered",
              ("Update the machine's site in the register.",), remote_resolvable=True, prior=0.4))),
    FaultInfo("CURFEW_VIOLATION", "Machine operated outside permitted hours", "security", (
        Cause("unauthorized_use", "Use outside the contract's hours",
              ("Call the customer; lock the machine remotely if the use is not authorised.",),
              remote_resolvable=True, prior=0.7),
        Cause("schedule_change", "Shift schedule changed",
              ("Update the site's permitted hours.",), remote_resolvable=True, prior=0.3))),
    FaultInfo("ENGINE_OIL_PRESSURE_LOW", "Engine oil pressure low (J1939 SPN 100)", "machine", (
        Cause("low_engine_oil", "Engine oil level low",
              ("Stop the engine at once.", "Check the dipstick and top up with the specified oil.",
               "Restart and confirm the warning is gone."),
              remote_resolvable=True, prior=0.6),
        Cause("oil_pump_failure", "Engine oil pump or pressure relief failure",
              ("Do not run the engine; an engineer inspects on site.",),
              remote_resolvable=False, spare_part="engine oil pump", prior=0.4))),
    FaultInfo("ENGINE_COOLANT_TEMP_HIGH", "Engine coolant temperature high (J1939 SPN 110)", "machine",
              (_RADIATOR, _LOW_COOLANT, _FAN_BELT)),
    FaultInfo("ENGINE_OIL_TEMP_HIGH", "Engine oil temperature high (J1939 SPN 175)", "machine",
              (_RADIATOR, _OIL_COOLER, _LOW_COOLANT)),
    FaultInfo("FUEL_WATER_DETECTED", "Water in fuel (J1939 SPN 97)", "machine", (
        Cause("water_in_fuel", "Water in the fuel filter bowl",
              ("Drain the water separator bowl.", "Refuel from a clean source."),
              remote_resolvable=True, spare_part="fuel filter", prior=1.0),)),
    FaultInfo("J1939_UNKNOWN", "Controller fault code", "machine", (
        Cause("see_code", "See the manufacturer's documentation for the reported SPN/FMI",
              ("Read the code with the customer and consult the service manual.",),
              remote_resolvable=False, prior=1.0),)),
    FaultInfo("SERVICE_DUE", "Scheduled maintenance due", "maintenance", (
        Cause("scheduled_service", "Service interval reached",
              ("Book the service with the customer.",), remote_resolvable=False,
              spare_part="service kit (filters, oil)", prior=1.0),)),
)}


@dataclass(frozen=True, slots=True)
class DtcMapping:
    fault_code: str
    severity: str
    description: str


# J1939 DM1 (SPN, FMI) → fault. FMI 0/1 are "most severe" high/low; 15-18 the least/moderate bands.
DTC_TABLE: dict[tuple[int, int], DtcMapping] = {
    (100, 1): DtcMapping("ENGINE_OIL_PRESSURE_LOW", "critical", "Engine oil pressure below normal, most severe"),
    (100, 17): DtcMapping("ENGINE_OIL_PRESSURE_LOW", "major", "Engine oil pressure below normal, least severe"),
    (100, 18): DtcMapping("ENGINE_OIL_PRESSURE_LOW", "major", "Engine oil pressure below normal, moderately severe"),
    (110, 0): DtcMapping("ENGINE_COOLANT_TEMP_HIGH", "critical", "Engine coolant temp above normal, most severe"),
    (110, 16): DtcMapping("ENGINE_COOLANT_TEMP_HIGH", "major", "Engine coolant temperature above normal, moderate"),
    (175, 0): DtcMapping("ENGINE_OIL_TEMP_HIGH", "critical", "Engine oil temperature above normal, most severe"),
    (175, 16): DtcMapping("ENGINE_OIL_TEMP_HIGH", "major", "Engine oil temperature above normal, moderate"),
    (97, 0): DtcMapping("FUEL_WATER_DETECTED", "minor", "Water in fuel indicator"),
}


def fault_info(code: str) -> FaultInfo:
    return FAULTS.get(code) or FAULTS["J1939_UNKNOWN"]
