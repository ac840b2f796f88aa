"""Alarms: faults become alarms (one active per equipment and fault) and open tickets via the API.

May import: core, diagnostics (fault types).
"""
