"""Upload the data source and the dashboards to a running Grafana through its HTTP API.

Idempotent: the folder, the data source and each dashboard are found by their stable uids and
created when missing, updated when different, and left alone when the same (a dashboard that did
not change gets no new version in Grafana's history). Uses grafana-client, the maintained
successor of grafana-api, with a service account token (or ``user:password`` in the URL).
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from dashboards.constants import (
    DATASOURCE_NAME,
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    FOLDER_TITLE,
    FOLDER_UID,
    MIN_INTERVAL,
    Json,
)

log = logging.getLogger(__name__)

# Grafana's "Version" field of the PostgreSQL data source: 1000 means 10 or later, which is all
# the query builder distinguishes; Grafana detects the real version when it tests the connection.
POSTGRES_VERSION_CODE = 1500
# Grafana's own pool towards the database: enough for a wall of panels refreshing together.
MAX_OPEN_CONNECTIONS = 10
PUSH_TIMEOUT_S = 30.0


class PushError(Exception):
    """Grafana refused or could not be reached; the message says which step."""


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """The database as Grafana's server reaches it (which may differ from how IronSight does)."""

    host: str
    port: int
    database: str
    user: str
    password: str | None = None
    sslmode: str = "disable"

    @classmethod
    def from_url(cls, url: str) -> DatabaseTarget:
        """``postgresql://user:password@host:port/database?sslmode=require``."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise ValueError(f"not a postgresql://user:password@host:port/database URL: {url!r}")
        database = urllib.parse.unquote(parts.path.lstrip("/"))
        if not database or not parts.username:
            raise ValueError(f"the URL must name the user and the database: {url!r}")
        query = urllib.parse.parse_qs(parts.query)
        return cls(host=parts.hostname, port=parts.port or 5432, database=database,
                   user=urllib.parse.unquote(parts.username),
                   password=urllib.parse.unquote(parts.password) if parts.password else None,
                   sslmode=query.get("sslmode", ["disable"])[0])


def datasource_payload(db: DatabaseTarget, *, timescaledb: bool) -> Json:
    """The data source as Grafana's API takes it (the same as deploy/grafana/provisioning)."""
    payload: Json = {
        "uid": DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": f"{db.host}:{db.port}",
        "user": db.user,
        "isDefault": False,
        "jsonData": {
            "database": db.database,
            "sslmode": db.sslmode,
            "postgresVersion": POSTGRES_VERSION_CODE,
            "timescaledb": timescaledb,
            "timeInterval": MIN_INTERVAL,
            "maxOpenConns": MAX_OPEN_CONNECTIONS,
            "maxIdleConns": MAX_OPEN_CONNECTIONS,
            "maxIdleConnsAuto": True,
            "connMaxLifetime": 14400,
        },
    }
    if db.password is not None:
        payload["secureJsonData"] = {"password": db.password}
    return payload


def dashboard_payload(dashboard: Json, folder_uid: str = FOLDER_UID) -> Json:
    """POST /api/dashboards/db body: the dashboard by uid (no id), into the folder, replacing."""
    body = {k: v for k, v in dashboard.items() if k not in ("id", "version")}
    return {"dashboard": {**body, "id": None}, "folderUid": folder_uid, "overwrite": True,
            "message": "ironsight dashboards push"}


def dashboard_changed(existing: Json | None, desired: Json) -> bool:
    """Whether Grafana's copy (GET /api/dashboards/uid/…: ``dashboard``) differs from ours in
    anything we set (Grafana adds its own id and version)."""
    if existing is None:
        return True
    return any(existing.get(key) != value for key, value in desired.items() if key not in ("id", "version"))


def datasource_changed(existing: Json | None, desired: Json) -> bool:
    if existing is None or "secureJsonData" in desired:
        return True  # a password can only be written, never compared
    return any(existing.get(key) != value for key, value in desired.items())


@dataclass(slots=True)
class PushReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"created {', '.join(self.created) or 'nothing'}; updated {', '.join(self.updated) or 'nothing'}; "
                f"unchanged {', '.join(self.unchanged) or 'nothing'}")


def push(grafana_url: str, token: str | None, *, dashboards: list[Json], datasource: Json | None = None,
         folder_uid: str = FOLDER_UID, folder_title: str = FOLDER_TITLE,
         timeout_s: float = PUSH_TIMEOUT_S) -> PushReport:
    """Create or update the folder, the data source (when given) and the dashboards."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError

    report = PushReport()
    api = GrafanaApi.from_url(grafana_url, credential=token, timeout=timeout_s)

    def get(what: str, call: Any, *args: Any) -> Json | None:
        try:
            return call(*args)
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise PushError(f"reading {what} from {grafana_url}: {exc}") from exc
        except Exception as exc:  # refused, unreachable, timed out (niquests' errors), 5xx
            raise PushError(f"reading {what} from {grafana_url}: {exc}") from exc

    def put(what: str, call: Any, *args: Any) -> None:
        try:
            call(*args)
        except Exception as exc:
            raise PushError(f"writing {what} to {grafana_url}: {exc}") from exc

    folder = get("folder", api.folder.get_folder, folder_uid)
    if folder is None:
        put("folder", api.folder.create_folder, folder_title, folder_uid)
        report.created.append(f"folder {folder_uid}")
    elif folder.get("title") != folder_title:
        put("folder", lambda: api.folder.update_folder(folder_uid, title=folder_title, overwrite=True))
        report.updated.append(f"folder {folder_uid}")
    else:
        report.unchanged.append(f"folder {folder_uid}")

    if datasource is not None:
        uid = datasource["uid"]
        existing = get("data source", api.datasource.get_datasource_by_uid, uid)
        if existing is None:
            put("data source", api.datasource.create_datasource, datasource)
            report.created.append(f"data source {uid}")
        elif datasource_changed(existing, datasource):
            put("data source", api.datasource.update_datasource_by_uid, uid, datasource)
            report.updated.append(f"data source {uid}")
        else:
            report.unchanged.append(f"data source {uid}")

    for dashboard in dashboards:
        uid = dashboard["uid"]
        found = get(f"dashboard {uid}", api.dashboard.get_dashboard, uid)
        in_folder = found is not None and (found.get("meta") or {}).get("folderUid") == folder_uid
        if found is not None and in_folder and not dashboard_changed(found.get("dashboard"), dashboard):
            report.unchanged.append(f"dashboard {uid}")
            continue
        put(f"dashboard {uid}", api.dashboard.update_dashboard, dashboard_payload(dashboard, folder_uid))
        (report.created if found is None else report.updated).append(f"dashboard {uid}")
    log.info("pushed to %s: %s", grafana_url, report)
    return report


def detect_timescaledb(database_url: str) -> bool:
    """Whether the database has the TimescaleDB extension installed (the data source's toggle)."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as conn:
        return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None
