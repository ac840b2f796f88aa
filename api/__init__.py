"""The HTTP API (FastAPI): thin routers over the packages' own queries and services.

May import: core, ingest, diagnostics, alarms, tickets (never device_sim).
"""
