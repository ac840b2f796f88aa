"""IronSight's data source and its SQL queries, as grafana-foundation-sdk types.

The SDK generates query types only for the data sources whose schema Grafana publishes (Prometheus,
Loki, Elasticsearch, …); it has none for the SQL data sources, so the PostgreSQL data source's raw
SQL query is defined here the way the SDK defines its own: a ``Dataquery`` model with ``to_json``
and a builder for it. Panels take it like any SDK query (``.targets([...])``).
"""

from __future__ import annotations

import enum
import typing
from textwrap import dedent

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

from dashboards.constants import DATASOURCE_TYPE, DATASOURCE_UID


def datasource() -> dashboard.DataSourceRef:
    return dashboard.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


def sql(text: str) -> str:
    """SQL as written in the source, without the indentation of the Python code around it."""
    return dedent(text).strip()


class Format(enum.StrEnum):
    """How the data source turns rows into frames: ``time_series`` needs a ``time`` column."""

    TABLE = "table"
    TIME_SERIES = "time_series"


class SQLQuery(cogvariants.Dataquery):
    """A raw SQL query of the PostgreSQL data source, as Grafana's code editor saves it."""

    ref_id: str
    raw_sql: str
    format: Format
    datasource: dashboard.DataSourceRef | None

    def __init__(self, raw_sql: str = "", ref_id: str = "", format: Format = Format.TABLE,
                 datasource: dashboard.DataSourceRef | None = None) -> None:
        self.raw_sql = raw_sql
        self.ref_id = ref_id
        self.format = format
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {"refId": self.ref_id, "editorMode": "code", "rawQuery": True,
                                      "rawSql": self.raw_sql, "format": self.format}
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        return payload


class Query(cogbuilder.Builder[SQLQuery]):
    """Builds an :class:`SQLQuery` on IronSight's data source; the SQL is dedented."""

    _internal: SQLQuery

    def __init__(self, raw_sql: str) -> None:
        self._internal = SQLQuery(sql(raw_sql), datasource=datasource())

    def build(self) -> SQLQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> typing.Self:
        self._internal.ref_id = ref_id
        return self

    def format(self, format: Format) -> typing.Self:
        self._internal.format = format
        return self


class SQLAnnotationTarget(dashboard.AnnotationTarget):
    """An annotation's SQL query. The SDK's schema (Grafana 11.6) types an annotation's target as the
    built-in Grafana data source's (limit, tags, type) only; a PostgreSQL annotation's target is a
    query of that data source, so this subclass writes the query instead."""

    query: SQLQuery

    def __init__(self, query: SQLQuery) -> None:
        super().__init__()
        self.query = query

    def to_json(self) -> dict[str, object]:
        return self.query.to_json()


class AnnotationTarget(cogbuilder.Builder[dashboard.AnnotationTarget]):
    """Builds the target of an annotation query whose SQL returns ``time``, ``timeend``, ``text``, ``tags``."""

    _internal: SQLAnnotationTarget

    def __init__(self, raw_sql: str) -> None:
        self._internal = SQLAnnotationTarget(Query(raw_sql).ref_id("Anno").build())

    def build(self) -> dashboard.AnnotationTarget:
        return self._internal
