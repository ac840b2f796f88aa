"""IronSight's own health, from what the database knows: is data flowing, are the workers alive and
keeping up, is anything refused, stuck or retried.

Grafana's data here is the PostgreSQL data source; the same questions in finer grain (rates, commit
latency, inbox depth, MQTT drops, request latency) are the Prometheus metrics each worker process
serves (core.metrics, docs/architecture.md), for a Prometheus where there is one.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Row
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

from core.shards import SHARD_COUNT, lock_class
from dashboards import blocks, fleet, props
from dashboards.common import HEALTH_UID
from dashboards.sql import quoted

# The sharded consumers and the outbox table each follows (diagnostics.worker.CONSUMER,
# alarms.worker.CONSUMER; a test keeps them equal).
CONSUMERS = (("diagnostics", "accepted_batches"), ("alarms", "fault_events"))
# Alarms of these severities open a work order by themselves (alarms.worker.TICKET_SEVERITIES).
TICKETED_SEVERITIES = ("critical", "major")
COMMAND_STATES = ("queued", "sent", "acknowledged", "executed", "rejected", "expired")
DEVICE_STATES = ("pending", "active", "revoked")


def _locks(consumer: str, purpose: str) -> str:
    """How many advisory locks of ``consumer`` are held now: live members, or owned shards (core.shards)."""
    return f"""(SELECT count(*) FROM pg_locks
     WHERE locktype = 'advisory' AND granted AND classid = ({lock_class(consumer, purpose)})::integer::oid
       AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"""


def _slowest(consumer: str) -> str:
    """The position of ``consumer``'s slowest shard (its progress, else its checkpoint): one row, or none."""
    return f"""(SELECT coalesce(progress_xid, last_xid) AS xid, coalesce(progress_id, last_id) AS id
      FROM shard_checkpoints WHERE consumer = '{consumer}' ORDER BY 1, 2 LIMIT 1) s"""


def _diagnosis_lag() -> str:
    """Seconds the oldest batch not yet diagnosed by every shard has waited (the status line's lag)."""
    return f"""(SELECT coalesce(extract(epoch FROM now() - min(t.accepted_at)), 0)
     FROM accepted_batches t, {_slowest('diagnostics')} WHERE (t.xid, t.id) > (s.xid, s.id))"""


def _alarms_lag() -> str:
    """Seconds since the oldest fault event not yet turned into alarms was stored (raised) or its
    clearing reading was taken."""
    return f"""(SELECT coalesce(extract(epoch FROM now() - min(greatest(f.created_at, t.at))), 0)
     FROM fault_events t JOIN faults f ON f.id = t.fault_id, {_slowest('alarms')}
     WHERE (t.xid, t.id) > (s.xid, s.id))"""


def _waiting(consumer: str, table_name: str) -> str:
    return f"""(SELECT count(*) FROM {table_name} t, {_slowest(consumer)} WHERE (t.xid, t.id) > (s.xid, s.id))"""


def pipeline_now() -> stat.Panel:
    return (
        blocks.stat_panel("Pipeline now", f"""
SELECT (SELECT coalesce(sum(readings), 0) FROM accepted_batches
        WHERE accepted_at > now() - interval '1 minute') / 60.0 AS "readings/s",
       {_diagnosis_lag()} AS "diagnosis lag",
       {_alarms_lag()} AS "alarms lag",
       (SELECT count(*) FROM dead_letters WHERE received_at > now() - interval '1 hour') AS "dead letters (1 h)",
       (SELECT coalesce(sum(readings_duplicate)::float / nullif(sum(readings_stored + readings_duplicate), 0), 0)
        FROM ingest_stats) AS "duplicates"
""", width=12, height=5, color_mode=common_model.BigValueColorMode.VALUE,
                          description="Readings accepted per second over the last minute; how long the oldest batch "
                                      "not yet diagnosed has waited, and the oldest fault event not yet turned into "
                                      "alarms; refused input in the last hour; the share of redelivered readings.")
        .color_scheme(blocks.fixed_color("text"))
        .decimals(1)
        .override_by_name("diagnosis lag", [props.unit("s"), props.threshold_colors(),
                                            props.thresholds("green", (10, "orange"), (60, "red"))])
        .override_by_name("alarms lag", [props.unit("s"), props.threshold_colors(),
                                         props.thresholds("green", (10, "orange"), (60, "red"))])
        .override_by_name("dead letters (1 h)", [props.threshold_colors(), props.thresholds("green", (1, "orange")),
                                                 props.decimals(0)])
        .override_by_name("duplicates", [props.unit("percentunit")])
    )


def workers_now() -> stat.Panel:
    columns = ",\n       ".join(
        f'{_locks(consumer, "member")} AS "{consumer} workers",\n       '
        f'{_locks(consumer, "shard")} AS "{consumer} shards held"' for consumer, _ in CONSUMERS)
    panel = (
        blocks.stat_panel("Workers now", f"""
SELECT (SELECT count(*) FROM ingest_stats WHERE updated_at > now() - interval '1 minute') AS "ingest writing",
       {columns}
""", width=12, height=5, color_mode=common_model.BigValueColorMode.VALUE,
                          description=f"Ingest workers that committed a batch in the last minute; the diagnostics and "
                                      f"alarms workers alive (their membership locks) and the shards they hold (of "
                                      f"{SHARD_COUNT}: fewer means some machines are not being diagnosed).")
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("red", (1, "green")))
        .decimals(0)
    )
    for consumer, _ in CONSUMERS:
        panel.override_by_name(f"{consumer} shards held", [props.thresholds("red", (SHARD_COUNT, "green"))])
    return panel


def readings_accepted() -> timeseries.Panel:
    return blocks.timeseries_panel("Readings accepted per second", """
SELECT $__timeGroupAlias(accepted_at, $__interval),
       sum(readings) * 1000.0 / $__interval_ms AS "readings/s",
       count(*) * 1000.0 / $__interval_ms AS "batches/s"
FROM accepted_batches
WHERE $__timeFilter(accepted_at)
GROUP BY 1
ORDER BY 1""", unit="short", decimals=1, width=12, height=8,
                                   description="New readings committed by ingest per second of arrival "
                                               "(accepted_batches), and the batches that carried them.")


def dead_letters_over_time() -> timeseries.Panel:
    return fleet.dead_letters_rate("Dead letters over time",
                                   "Input refused by ingest and the devices worker, by reason.")


def ingest_workers() -> table.Panel:
    return (
        blocks.table_panel("Ingest workers", """
SELECT worker, started_at AS "started", updated_at AS "last batch",
       round(extract(epoch FROM now() - updated_at)) AS "silent for",
       round(messages / greatest(extract(epoch FROM updated_at - started_at), 1), 1) AS "messages/s",
       messages, readings_stored AS "stored", readings_duplicate AS "duplicates", dead_letters AS "dead letters"
FROM ingest_stats
ORDER BY worker""", width=14, height=7,
                           description="Each ingest worker's counters since it started; messages/s is the average "
                                       "over that time.")
        .override_by_name("silent for", [props.unit("s"), props.color_text(), props.threshold_colors(),
                                         props.thresholds("green", (60, "red"))])
        .override_by_name("started", [props.unit("dateTimeFromNow")])
        .override_by_name("last batch", [props.unit("dateTimeFromNow")])
    )


def dead_letter_reasons() -> table.Panel:
    return (
        blocks.table_panel("Refused input by reason", """
SELECT reason, count(*) AS "dead letters", count(DISTINCT equipment_id) AS "machines", max(received_at) AS "last"
FROM dead_letters
WHERE $__timeFilter(received_at)
GROUP BY reason
ORDER BY 2 DESC, reason""", width=10, height=7,
                           description="Dead letters in the range by reason code (docs/protocol.md), with how many "
                                       "machines sent them. GET /api/v1/dead-letters lists them.")
        .override_by_name("last", [props.unit("dateTimeFromNow")])
    )


def _consumer_row(consumer: str, table_name: str) -> str:
    lag = _diagnosis_lag() if consumer == "diagnostics" else _alarms_lag()
    return f"""SELECT '{consumer}' AS consumer,
       {_locks(consumer, "member")} AS "workers",
       {_locks(consumer, "shard")} AS "shards held",
       (SELECT count(*) FROM shard_checkpoints WHERE consumer = '{consumer}') AS "shards checkpointed",
       (SELECT max(saved_at) FROM shard_checkpoints WHERE consumer = '{consumer}') AS "last checkpoint",
       (SELECT min(coalesce(progress_at, saved_at)) FROM shard_checkpoints
        WHERE consumer = '{consumer}') AS "slowest shard moved",
       {_waiting(consumer, table_name)} AS "waiting",
       {lag} AS lag"""


def consumers() -> table.Panel:
    rows = "\nUNION ALL\n".join(_consumer_row(consumer, table_name) for consumer, table_name in CONSUMERS)
    return (
        blocks.table_panel("Sharded consumers", rows, width=24, height=5,
                           description="Diagnostics follows accepted_batches, alarms follows fault_events, each spread "
                                       "over its workers by shard: live workers, shards held now, the last checkpoint, "
                                       "when the slowest shard last moved, rows written but not yet consumed by every "
                                       "shard, and how long the oldest of them has waited.")
        .override_by_name("last checkpoint", [props.unit("dateTimeFromNow")])
        .override_by_name("slowest shard moved", [props.unit("dateTimeFromNow")])
        .override_by_name("lag", [props.unit("s"), props.decimals(1), props.color_text(), props.threshold_colors(),
                                  props.thresholds("green", (10, "orange"), (60, "red"))])
        .override_by_name("shards held", [props.color_text(), props.threshold_colors(),
                                          props.thresholds("red", (SHARD_COUNT, "green"))])
    )


def alarm_delivery() -> stat.Panel:
    return (
        blocks.stat_panel("Alarm delivery", f"""
SELECT (SELECT count(*) FROM alarms WHERE state = 'active' AND ticket_id IS NULL
          AND severity IN ({quoted(TICKETED_SEVERITIES)})) AS "waiting for a work order",
       (SELECT count(*) FROM alarms WHERE state = 'active' AND ticket_id IS NULL
          AND ticket_error IS NOT NULL) AS "work order request failing",
       (SELECT coalesce(sum(greatest(ticket_attempts - 1, 0)), 0) FROM alarms
        WHERE $__timeFilter(created_at)) AS "work order retries",
       (SELECT count(*) FROM alarm_escalations WHERE status = 'pending') AS "escalations pending",
       (SELECT coalesce(sum(greatest(attempts - 1, 0)), 0) FROM alarm_escalations
        WHERE $__timeFilter(created_at)) AS "escalation retries"
""", width=24, height=4, color_mode=common_model.BigValueColorMode.VALUE,
                          description="Alarms waiting for the alarms worker to open their work order (critical and "
                                      "major), those whose last request failed (retried with backoff), retries of "
                                      "the alarms and escalations raised in the range, escalations not yet delivered "
                                      "to the webhook.")
        .color_scheme(blocks.threshold_colors())
        .thresholds(blocks.thresholds("green", (1, "orange")))
        .decimals(0)
        .override_by_name("work order request failing", [props.thresholds("green", (1, "red"))])
    )


def controllers() -> stat.Panel:
    states = ",\n       ".join(f"(SELECT count(*) FROM devices WHERE state = '{s}') AS \"{s}\"" for s in DEVICE_STATES)
    return (
        blocks.stat_panel("Controllers", f"""
SELECT (SELECT count(*) FROM device_presence WHERE connected) AS "connected",
       (SELECT count(*) FROM device_presence WHERE NOT connected AND reason = 'lost') AS "connection lost",
       (SELECT count(*) FROM device_presence WHERE NOT connected AND reason IS DISTINCT FROM 'lost') AS "disconnected",
       {states}
""", width=12, height=5, color_mode=common_model.BigValueColorMode.VALUE,
                          description="What the controllers' retained status says (device_presence; 'connection "
                                      "lost' is their last will), and the device registry by state.")
        .color_scheme(blocks.fixed_color("text"))
        .decimals(0)
        .override_by_name("connection lost", [props.threshold_colors(), props.thresholds("green", (1, "orange"))])
    )


def commands() -> stat.Panel:
    columns = ",\n       ".join(f"count(*) FILTER (WHERE state = '{s}') AS \"{s}\"" for s in COMMAND_STATES)
    return (
        blocks.stat_panel("Remote commands", f"""
SELECT {columns}
FROM commands
WHERE $__timeFilter(created_at)""", width=12, height=5, color_mode=common_model.BigValueColorMode.VALUE,
                          description="Remote commands created in the range, by state: queued (waiting for the "
                                      "controller to connect), sent, acknowledged, executed, rejected, expired.")
        .color_scheme(blocks.fixed_color("text"))
        .decimals(0)
        .override_by_name("expired", [props.threshold_colors(), props.thresholds("green", (1, "orange"))])
        .override_by_name("rejected", [props.threshold_colors(), props.thresholds("green", (1, "orange"))])
    )


def sequence_totals() -> stat.Panel:
    return (
        blocks.stat_panel("Messages missing", """
SELECT coalesce(sum(missing_now), 0) AS "missing now",
       count(*) FILTER (WHERE missing_now > 0) AS "machines with gaps",
       coalesce(sum(missed), 0) AS "found missing",
       coalesce(sum(healed), 0) AS "healed",
       coalesce(sum(lost), 0) AS "lost",
       coalesce(sum(duplicates), 0) AS "duplicates"
FROM equipment_sequence""", width=10, height=7, color_mode=common_model.BigValueColorMode.VALUE,
                          description="What the controllers' message sequence numbers say, since each machine's first "
                                      "message: messages found missing (a broker or link dropped them), healed (they "
                                      "came late, or again on a resend), lost (not resent within the give-up time, "
                                      "or the controller's counter started again), and received twice.")
        .color_scheme(blocks.fixed_color("text"))
        .decimals(0)
        .override_by_name("missing now", [props.threshold_colors(), props.thresholds("green", (1, "orange"))])
        .override_by_name("lost", [props.threshold_colors(), props.thresholds("green", (1, "red"))])
    )


def machines_missing_messages() -> table.Panel:
    return (
        blocks.table_panel("Machines with messages missing", """
SELECT s.equipment_id AS "machine", e.customer, s.missing_now AS "missing", s.missing_since AS "since",
       (SELECT c.state || coalesce(' (' || (c.result ->> 'resent') || ' resent, '
                                   || (c.result ->> 'unavailable') || ' no longer held)', '')
        FROM commands c WHERE c.equipment_id = s.equipment_id AND c.kind = 'resend'
        ORDER BY c.created_at DESC LIMIT 1) AS "last resend",
       s.lost
FROM equipment_sequence s JOIN equipment e ON e.id = s.equipment_id
WHERE s.missing_now > 0
ORDER BY s.missing_since
LIMIT 200""", width=14, height=7,
                           description="Machines whose telemetry has gaps not healed yet, the longest-waiting first: "
                                       "their history may lack what a fault looked like. The devices worker asks a "
                                       "connected controller to resend; 'last resend' is that command's state and "
                                       "answer.")
        .override_by_name("since", [props.unit("dateTimeFromNow")])
    )


def dashboard() -> dashboard_model.Dashboard:
    return blocks.make_dashboard(
        HEALTH_UID,
        "IronSight · Health",
        "IronSight's own health: data flowing, workers alive and keeping up, input refused, deliveries retried.",
        time_from="now-1h",
        tags=("health",),
        panels=[
            pipeline_now(), workers_now(),
            readings_accepted(), dead_letters_over_time(),
            Row("Ingest"),
            ingest_workers(), dead_letter_reasons(),
            sequence_totals(), machines_missing_messages(),
            Row("Diagnosis and alarms"),
            consumers(), alarm_delivery(),
            Row("Devices"),
            controllers(), commands(),
        ],
    )
