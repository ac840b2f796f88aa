"""Property-based requests over the whole OpenAPI document (schemathesis): whatever the input, no
5xx, and every answer matches what the document says (status codes, content types, bodies).

Each case gets a fresh API key, and the accounts are re-enabled before each case:
generated requests include logging out and disabling accounts, which would otherwise lock the rest
of the run out and test nothing but 401s.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import requests
import requests.adapters
import schemathesis
from hypothesis import HealthCheck, given, settings

from api import accounts
from core.settings import Settings
from tests.conftest import empty_database
from tests.helpers import ApiServer, seed_tenant

# Examples per operation: enough to reach every parameter's edge cases, few enough for a 2-core CI.
EXAMPLES_PER_OPERATION = 40
# A request the schema allows may still break a rule the schema cannot express (a customer account
# names its customer, a period's start precedes its end); such a request is answered 422, by design.
EXCLUDED_CHECKS = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture(scope="module")
def live(migrated_database_url: str) -> Iterator[tuple[ApiServer, str]]:
    empty_database(migrated_database_url)
    with psycopg.connect(migrated_database_url) as conn:
        seed_tenant(conn, "alpha-corp", "ALPHA-1")
        seed_tenant(conn, "beta-corp", "BETA-1")
    config = Settings(database_url=migrated_database_url, rate_limit_per_min=1_000_000, rate_limit_burst=1_000_000)
    server = ApiServer(config, migrated_database_url)
    server.user("customer", customer="alpha-corp", username="alpha-user")
    yield server, migrated_database_url
    server.close()
    empty_database(migrated_database_url)


class _Adapter(requests.adapters.BaseAdapter):
    """requests' HTTP adapter behind a plain adapter type. grafana-client brings niquests, whose
    urllib3-future replaces urllib3's pool container with one schemathesis cannot count connections
    in; it only counts them on HTTPAdapter instances, so it leaves this one alone."""

    def __init__(self) -> None:
        super().__init__()
        self._inner = requests.adapters.HTTPAdapter()

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        return self._inner.send(request, **kwargs)

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize("username", ["admin", "alpha-user"])
def test_the_api_answers_every_generated_request_as_documented(live, username):
    """As the admin (every route open) and as a customer (refusals and scoped answers)."""
    server, url = live
    api_schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    session = requests.Session()
    session.adapters.clear()
    session.mount("http://", _Adapter())
    cases: list[str] = []
    failures: dict[str, str] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        def fresh_key() -> str:
            conn.execute("UPDATE api_users SET active = true WHERE username IN ('admin', %s)", (username,))
            user_id = conn.execute("SELECT id FROM api_users WHERE username = %s", (username,)).fetchone()[0]
            return accounts.create_api_key(conn, user_id, "schemathesis")[0]

        def check(operation) -> None:
            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                cases.append(operation.label)
                case.call_and_validate(base_url=server.url, session=session, excluded_checks=EXCLUDED_CHECKS,
                                       headers={"Authorization": f"Bearer {fresh_key()}"})

            run()

        operations = [result.ok() for result in api_schema.get_all_operations()]
        for operation in operations:
            try:
                check(operation)
            except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all failures reported together
                failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    print(f"schemathesis as {username}: {len(cases)} cases over {len(set(cases))} of {len(operations)} operations")
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
    assert set(cases) == {op.label for op in operations}
