"""Caller lookup benchmark: the caller on screen at fleet size.

A fresh database gets ``--customers`` customers with ``--machines`` machines in all (each with its
latest state), ``--contacts`` contacts with a mobile number each, active alarms with a diagnosis on
one machine in ten and an open work order on one in five. The API runs in this process (uvicorn,
one worker, as ``ironsight api`` serves it); ``--lookups`` calls of ``GET /api/v1/calls/lookup``
ask for random contacts' numbers, spelled as a caller's line gives them (international with
spaces, ``00`` prefix, national with the trunk 0) and one in five by its last 8 digits only (a partial match). Each
latency is the HTTP round trip. Uses IRONSIGHT_DATABASE_URL when set, an embedded PostgreSQL
otherwise. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import uvicorn
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import create_app  # noqa: E402
from bench._common import fresh_database, quantile, services  # noqa: E402
from core.settings import Settings  # noqa: E402

ADMIN_PASSWORD = "bench-admin-password-1"


def seed(conn: psycopg.Connection, customers: int, machines: int, contacts: int) -> None:
    conn.execute("INSERT INTO contract_tiers (name, respond_h, arrive_h, resolve_h) VALUES ('gold', 2, 4, 12)")
    conn.execute("""INSERT INTO customers (id, name, tier)
                    SELECT 'C' || lpad(n::text, 5, '0'), 'Customer ' || n, CASE WHEN n %% 3 = 0 THEN 'gold' END
                    FROM generate_series(1, %s) n""", (customers,))
    conn.execute("""INSERT INTO equipment (id, serial, model, kind, customer, site)
                    SELECT 'M' || lpad(n::text, 6, '0'), 'SN' || n, 'EX210', 'excavator',
                           'C' || lpad((n %% %s + 1)::text, 5, '0'), NULL
                    FROM generate_series(1, %s) n""", (customers, machines))
    conn.execute("""INSERT INTO equipment_state (equipment_id, last_ts, last_received_at, last_seq, oil_temp_c,
                        engine_rpm, hydraulic_pressure_bar, coolant_temp_c, fuel_level_pct, engine_hours, lat, lon,
                        speed_kmh)
                    SELECT id, now(), now(), 1, 85, 1500, 210, 88, 60, 1234.5, 51.9, 4.1, 0 FROM equipment""")
    conn.execute("""INSERT INTO customer_contacts (customer_id, name, role)
                    SELECT 'C' || lpad((n %% %s + 1)::text, 5, '0'), 'Contact ' || n, 'site manager'
                    FROM generate_series(1, %s) n""", (customers, contacts))
    conn.execute("""INSERT INTO contact_phones (contact_id, e164)
                    SELECT id, '+316' || lpad(id::text, 8, '0') FROM customer_contacts""")
    conn.execute("""INSERT INTO faults (equipment_id, fault_code, severity, rule, rule_version, started_at, evidence,
                                        diagnosis)
                    SELECT id, 'OIL_OVERHEAT', 'major', 'threshold', 1, now(), '{}',
                           '{"causes": [{"cause": "oil cooler clogged", "probability": 0.7,
                                         "remedy": ["clean the cooler fins"]}]}'
                    FROM equipment WHERE right(id, 1) = '0'""")
    conn.execute("""INSERT INTO alarms (equipment_id, fault_code, severity, raised_at, last_fault_id)
                    SELECT equipment_id, fault_code, severity, started_at, id FROM faults""")
    conn.execute("""INSERT INTO tickets (equipment_id, title, priority, created_by, respond_by, resolve_by)
                    SELECT id, 'check ' || id, 'minor', 'bench', now() + interval '4 hours', now() + interval '1 day'
                    FROM equipment WHERE right(id, 1) IN ('2', '7')""")
    conn.commit()
    conn.execute("ANALYZE")


def spelled(rng: random.Random, contact_id: int) -> str:
    national = f"6{contact_id:08d}"
    choice = rng.random()
    if choice < 0.2:
        return national[-8:]
    if choice < 0.45:
        return f"+31 {national[0]} {national[1:5]} {national[5:]}"
    if choice < 0.7:
        return f"0031{national}"
    return f"0{national[0]}-{national[1:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(7)
    with (services(Path(".ironsight-bench").resolve()) as (server_url, _, _),
          fresh_database(server_url, f"ironsight_calls_{uuid.uuid4().hex[:8]}") as database_url):
        started = time.monotonic()
        with psycopg.connect(database_url) as conn:
            seed(conn, args.customers, args.machines, args.contacts)
        seed_s = time.monotonic() - started
        settings = Settings(database_url=database_url, admin_password=SecretStr(ADMIN_PASSWORD), phone_region="NL",
                            rate_limit_per_min=10_000_000, rate_limit_burst=1_000_000)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(settings, database_url), host="127.0.0.1", port=port,
                                               log_level="warning", proxy_headers=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}/api/v1"
        token = httpx.post(base + "/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
                           ).json()["access_token"]
        latencies, found, exact = [], 0, 0
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            for _ in range(50):  # warm the connection pool and the caches
                client.get("/calls/lookup", params={"phone": spelled(rng, rng.randint(1, args.contacts))})
            for _ in range(args.lookups):
                contact_id = rng.randint(1, args.contacts)
                began = time.perf_counter()
                response = client.get("/calls/lookup", params={"phone": spelled(rng, contact_id)})
                latencies.append((time.perf_counter() - began) * 1000)
                body = response.json()
                if response.status_code == 200 and body["matches"] and body["matches"][0]["contact_id"] == contact_id:
                    found += 1
                    exact += body["matches"][0]["exact"]
        server.should_exit = True
        thread.join(10)
        latencies.sort()
        result = {"lookups": args.lookups, "p50_ms": round(statistics.median(latencies), 2),
                  "p99_ms": round(quantile(latencies, 0.99), 2), "max_ms": round(latencies[-1], 2),
                  "caller_found_first": found, "exact_matches": exact, "customers": args.customers,
                  "machines": args.machines, "contacts": args.contacts, "seed_s": round(seed_s, 1)}
        print(json.dumps(result))


if __name__ == "__main__":
    main()
