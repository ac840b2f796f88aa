"""Grafana dashboards as code: fleet overview, machine drill-down, alarm console, work orders, and
IronSight's own health.

Typed Python on grafana-foundation-sdk, Grafana's dashboard builders (dashboards.blocks holds
IronSight's shared pieces), rendered to deterministic JSON in dashboards/json/ for Grafana's file
provisioning (deploy/grafana/) or uploaded with ``push``. Every panel reads IronSight's
database through one PostgreSQL data source (uid ``ironsight-pg``) as a read-only role; the SQL
runs on plain PostgreSQL and on TimescaleDB alike.

May import: ``core`` (names and defaults only).
"""
