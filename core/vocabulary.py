"""Terms every package uses the same way: how serious a fault is, and what a machine is doing.

Defined once here; rules, queries, dashboards and API schemas derive from these names.
"""

from __future__ import annotations

# Fault and alarm severities, least serious first.
SEVERITIES = ("warning", "minor", "major", "critical")

# Operating state from engine speed and ground speed. Below ENGINE_ON_RPM the engine is off.
ENGINE_ON_RPM = 300.0
# Above WORKING_RPM (or moving) the machine counts as working, otherwise as idling: idle runs at
# about 800 rpm, travel at 1500, digging or pumping at 1800. Usage hours and the dashboards count so.
WORKING_RPM = 1200.0
MOVING_KMH = 1.0
# Above FULL_LOAD_RPM the hydraulics run at working pressure, so pressure limits and pressure
# statistics only mean something there.
FULL_LOAD_RPM = 1600.0
