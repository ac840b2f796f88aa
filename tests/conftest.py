"""Fixtures for tests against real services.

``IRONSIGHT_TEST_DATABASE_URL`` / ``IRONSIGHT_TEST_MQTT_URL`` name servers to use (CI sets them to
the machine's PostgreSQL and Mosquitto); otherwise an embedded PostgreSQL and broker are started.
Each run creates its own database and its own MQTT topic root, and removes the database after.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core.settings import Settings
from ironsight.schema import migrate

RUN_ID = uuid.uuid4().hex[:10]

# Tables in dependency order; truncated between tests that want an empty database.
_TABLES = ("notification_attempts", "notifications", "api_login_throttle", "api_tokens", "api_users", "readings_hourly",
           "command_events", "commands", "device_presence", "devices", "vehicle_trackers",
           "stock_movements", "part_stock", "vehicle_positions", "vehicles", "engineers", "warehouses",
           "parts_catalogue",
           "service_records",
           "service_stations", "callback_attempts", "callbacks", "complaint_rounds", "complaints",
           "ticket_consultations", "ticket_sla_alerts", "ticket_surveys", "ticket_alarms", "ticket_events", "tickets",
           "calls", "contact_phones", "customer_contacts", "contract_tier_limits", "contract_tiers",
           "alarm_escalations", "alarm_events", "alarms", "fault_events", "faults", "diagnostic_state",
           "accepted_batches", "dead_letters", "equipment_usage", "equipment_state", "ingest_stats", "readings",
           "message_sequences", "equipment_sequence",
           "usage_hourly",
           "consumer_cursors",
           "shard_checkpoints",
           "equipment", "customers", "sites")


@pytest.fixture(scope="session")
def server_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("IRONSIGHT_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from ironsight.embedded_postgres import start_embedded_postgres

    server = start_embedded_postgres(tmp_path_factory.mktemp("embedded-pg"))
    try:
        yield server.url
    finally:
        server.stop()


def database_url_for(server_url: str, dbname: str) -> str:
    params = conninfo_to_dict(server_url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def new_database(server_database_url: str) -> Iterator[Callable[[str], str]]:
    """Create databases named for this run on the server; all are dropped at the end."""
    created: list[str] = []

    def create(label: str) -> str:
        name = f"ironsight_test_{RUN_ID}_{label}"
        with psycopg.connect(server_database_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return database_url_for(server_database_url, name)

    yield create
    with psycopg.connect(server_database_url, autocommit=True) as admin:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_database_url(new_database: Callable[[str], str]) -> str:
    url = new_database("main")
    migrate(url)
    return url


def empty_database(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(_TABLES) + " RESTART IDENTITY CASCADE")


@pytest.fixture
def database_url(migrated_database_url: str) -> str:
    """The run's migrated database, emptied before the test."""
    empty_database(migrated_database_url)
    return migrated_database_url


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url) as connection:
        yield connection


@pytest.fixture(scope="session")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("IRONSIGHT_TEST_MQTT_URL")
    if url:
        yield url
        return
    from ironsight.embedded_broker import start_embedded_broker

    broker = start_embedded_broker(tmp_path_factory.mktemp("embedded-broker"))
    try:
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture
def settings(database_url: str, mqtt_url: str, tmp_path: Path) -> Settings:
    # A topic root per test: retained or queued messages of one test never reach another.
    # Rate limits generous enough for the tests that walk every route; the limit has its own test.
    return Settings(database_url=database_url, mqtt_url=mqtt_url, data_dir=tmp_path,
                    topic_root=f"ironsight-test-{RUN_ID}-{uuid.uuid4().hex[:6]}",
                    rate_limit_per_min=1_000_000, rate_limit_burst=100_000)


class Background:
    """Runs ``target(stop_event)`` workers in threads and stops them all at the end of a test."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, target: Callable[[threading.Event], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, args=(self.stop,), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)
            assert not thread.is_alive(), f"{thread.name} did not stop"


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.close()


# --- TimescaleDB (tests/test_timescaledb.py) ---

TIMESCALEDB_SKIP_REASON = (
    "IRONSIGHT_TEST_TIMESCALEDB_URL is not set: no TimescaleDB server to try the TimescaleDB path on "
    "(docs/timescaledb.md says how to start one)")


@pytest.fixture(scope="session")
def new_timescaledb_database() -> Iterator[Callable[[str], str]]:
    """Databases named for this run on the TimescaleDB server ``IRONSIGHT_TEST_TIMESCALEDB_URL``
    names, like ``new_database`` on the plain one; all are dropped at the end. Skips without the
    variable (CI has no TimescaleDB); a server named there that lacks the extension is an error."""
    server_url = os.environ.get("IRONSIGHT_TEST_TIMESCALEDB_URL")
    if not server_url:
        pytest.skip(TIMESCALEDB_SKIP_REASON)
    with psycopg.connect(server_url, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone():
            pytest.fail("IRONSIGHT_TEST_TIMESCALEDB_URL names a server without the timescaledb extension")
    created: list[str] = []

    def create(label: str) -> str:
        name = f"ironsight_test_{RUN_ID}_tsdb_{label}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return database_url_for(server_url, name)

    yield create
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
