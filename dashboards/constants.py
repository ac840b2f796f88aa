"""Names and uids the dashboards, the data source and the folder share.

Plain values without imports, so that the command line, ``push`` and ``verify`` load without the
SDK (``ironsight`` builds its parser with ``dashboards.cli`` on every command).
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

# The one data source every panel reads: Grafana's PostgreSQL plugin (id since Grafana 10.3; the
# old id "postgres" is an alias) pointed at IronSight's database with a read-only role.
DATASOURCE_UID = "ironsight-pg"
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE_NAME = "IronSight"
# Lower bound of $__interval (the data source's "Min time interval"): controllers report at most
# once a second, so finer buckets would only be empty.
MIN_INTERVAL = "1s"

FOLDER_UID = "ironsight"
FOLDER_TITLE = "IronSight"
TAG = "ironsight"
GRID_COLUMNS = 24
