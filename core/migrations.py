"""Schema migrations: each package keeps numbered SQL files in its own ``migrations/`` folder.

A file ``0001_name.sql`` runs everywhere. A pair ``0001_name.timescaledb.sql`` /
``0001_name.plain.sql`` runs the first where the TimescaleDB extension is installable and the
second on plain PostgreSQL, under the one migration name ``0001_name``. Every migration runs once,
in its own transaction, under an advisory lock so that processes starting together do not race.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psycopg

from core.db import timescaledb_available

log = logging.getLogger(__name__)

_LOCK_KEY = 0x1A0_5167  # arbitrary, constant: one migrator at a time per database


@dataclass(frozen=True, slots=True)
class Migration:
    package: str
    name: str
    path: Path


def discover(package: ModuleType, *, timescaledb: bool) -> list[Migration]:
    if package.__file__ is None:
        raise ValueError(f"{package.__name__} has no file (a namespace package?): cannot find its migrations")
    folder = Path(package.__file__).parent / "migrations"
    variant = "timescaledb" if timescaledb else "plain"
    chosen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.sql")):
        stem_parts = path.name[: -len(".sql")].split(".")
        name = stem_parts[0]
        if len(stem_parts) == 2 and stem_parts[1] != variant:
            continue
        if name in chosen:
            raise RuntimeError(f"two migrations named {name} in {folder}")
        chosen[name] = path
    return [Migration(package.__name__, name, chosen[name]) for name in sorted(chosen)]


def apply_migrations(conn: psycopg.Connection, packages: list[ModuleType]) -> list[str]:
    """Apply what is missing, in package order then file order; return the names applied."""
    if conn.autocommit:
        conn.autocommit = False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   package text NOT NULL,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (package, name))"""
        )
    timescaledb = timescaledb_available(conn)
    applied: list[str] = []
    for package in packages:
        for migration in discover(package, timescaledb=timescaledb):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE package = %s AND name = %s",
                    (migration.package, migration.name),
                ).fetchone()
                if done:
                    continue
                conn.execute(migration.path.read_text())
                conn.execute(
                    "INSERT INTO schema_migrations (package, name) VALUES (%s, %s)",
                    (migration.package, migration.name),
                )
            log.info("applied migration %s/%s", migration.package, migration.path.name)
            applied.append(f"{migration.package}/{migration.name}")
    conn.commit()
    return applied
