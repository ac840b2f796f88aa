"""Shared foundations: settings, database pool and migrations, the telemetry message, topic names.

May import: nothing of ours. Every other package may import this one.
"""
