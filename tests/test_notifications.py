"""Notifications on the real database, delivered to a real SMTP server (aiosmtpd) and a real HTTP
receiver in this process: templates and languages, recipients, the outbox in the event's transaction,
signed webhooks, and the delivery guarantees (a channel down then back loses nothing and sends
nothing twice; concurrent workers; a crash between send and record; permanent refusals; hostile
receivers)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY
from psycopg.rows import dict_row

from core import metrics
from core.customers import save_contact
from core.register import EquipmentRecord, register_equipment
from notifications import EVENTS, notify
from notifications.channels import Channels, DeliveryConfig, parse_smtp_url
from notifications.signing import verify
from notifications.sinks import HttpSink, MailSink, free_port
from notifications.templates import MISSING, TEMPLATES, render
from notifications.worker import claim, deliver_round
from tickets import service
from tickets.resources import Engineer, Station, upsert_engineer, upsert_station

SECRET = "test-webhook-secret"
CUSTOMER = "nordbau"
EQUIPMENT = "NB-EX-1"
AT = datetime(2030, 5, 6, 7, 8, tzinfo=UTC)


# --- real receivers ---


class SmtpReceiver:
    """An aiosmtpd server on a chosen port, keeping every message it accepts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[Any] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                receiver.messages.append(message_from_bytes(envelope.content, policy=default_policy))
                return "250 2.0.0 Ok: queued"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class HttpReceiver:
    """A webhook and SMS gateway receiver on a chosen port. ``mode``: ``ok``; an HTTP status; ``drip``
    (answers 200 one byte at a time, for ever); ``huge`` (a 200 with 200 MB of body); ``silent``
    (answers nothing for 30 s). It verifies every signature itself, with hmac.compare_digest."""

    def __init__(self, port: int, mode: str | int = "ok") -> None:
        self.port = port
        self.mode = mode
        self.requests: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers.get("X-IronSight-Timestamp", "")
                expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + body,
                                                hashlib.sha256).hexdigest()
                receiver.requests.append({
                    "path": self.path, "key": self.headers.get("Idempotency-Key"), "body": body,
                    "json": json.loads(body), "timestamp": timestamp,
                    "verified": hmac.compare_digest(expected, self.headers.get("X-IronSight-Signature", ""))})
                try:
                    self._answer(receiver.mode)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the worker gave up on us: as it should

            def _answer(self, mode):
                if mode == "drip":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    while not receiver.stopping.wait(0.05):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                elif mode == "huge":
                    self.send_response(200)
                    self.send_header("Content-Length", str(200 * 1024 * 1024))
                    self.end_headers()
                    chunk = b"x" * 65536
                    for _ in range(200 * 16):
                        if receiver.stopping.is_set():
                            return
                        self.wfile.write(chunk)
                elif mode == "silent":
                    receiver.stopping.wait(30)
                else:
                    status = 200 if mode == "ok" else int(mode)
                    data = b'{"ok": true}'
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def keys(self, path: str | None = None) -> Counter:
        return Counter(r["key"] for r in self.requests if path is None or r["path"] == path)

    def start(self) -> HttpReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


# --- the world: a customer with contacts, a machine, a ticket, an engineer, a group ---


def _contact(conn, name: str, *, email: str | None = None, phones: tuple[str, ...] = (), channel: str = "email",
             language: str = "en", notify_all: bool = False) -> int:
    fields: dict[str, Any] = {"name": name, "preferred_channel": channel, "language": language,
                              "phones": list(phones)}
    if email:
        fields["email"] = email
    contact_id = save_contact(conn, CUSTOMER, None, fields, "NL")["id"]  # type: ignore[index]
    conn.execute("UPDATE customer_contacts SET notify_all = %s WHERE id = %s", (notify_all, contact_id))
    return contact_id


@pytest.fixture
def world(conn) -> dict[str, Any]:
    register_equipment(conn, [EquipmentRecord(EQUIPMENT, "SN-NB-1", "EX210", "excavator", CUSTOMER)])
    conn.execute("UPDATE customers SET name = 'Nordbau GmbH' WHERE id = %s", (CUSTOMER,))
    contacts = {
        "wang": _contact(conn, "王伟", email="wang@nordbau.example", channel="email", language="zh-CN"),
        "sms": _contact(conn, "Sam", phones=("+31 6 1234 5678",), channel="phone", notify_all=True),
        "app": _contact(conn, "Ann", phones=("+31 6 8765 4321",), channel="app", notify_all=True),
        "nobody": _contact(conn, "Nemo", channel="email", notify_all=True),
        "quiet": _contact(conn, "Quinn", email="quinn@nordbau.example"),  # hears only about their own tickets
    }
    upsert_station(conn, Station("ST-nb", "Nordbau station", 52.0, 4.0))
    upsert_engineer(conn, Engineer("eng-li", "Li Na", "ST-nb", ("EX210",)))
    upsert_engineer(conn, Engineer("eng-bo", "Bo", "ST-nb", ("EX210",)))
    conn.execute("UPDATE engineers SET phone = '+8613800138000', email = 'li@service.example', language = 'zh', "
                 "preferred_channel = 'sms' WHERE id = 'eng-li'")
    # Prefers SMS but has no phone: e-mail instead.
    conn.execute("UPDATE engineers SET email = 'bo@service.example', preferred_channel = 'sms' WHERE id = 'eng-bo'")
    conn.commit()
    ticket, _ = service.create_ticket(conn, service.NewTicket(EQUIPMENT, "Hydraulic pressure low", "major",
                                                              contact_id=contacts["wang"]))
    conn.execute("UPDATE tickets SET engineer = 'eng-li', eta = %s, arrive_by = %s WHERE id = %s",
                 (AT + timedelta(hours=1), AT + timedelta(hours=2), ticket["id"]))
    group = f"experts-{uuid.uuid4().hex[:8]}"  # service groups outlive the tests' truncation
    conn.execute("INSERT INTO service_groups (name, kind, webhook_url) VALUES (%s, 'expert', %s)",
                 (group, "http://127.0.0.1:9/never-called"))
    conn.cursor().executemany(
        "INSERT INTO service_group_members (group_name, member, name, email, phone, language, preferred_channel) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [(group, "rd-1", "Rita", "rita@rd.example", None, "en", "email"),
         (group, "rd-2", "Zhou", None, "+8613900139000", "zh", "email"),   # no e-mail: SMS
         (group, "rd-3", "Ghost", None, None, "en", "sms")])               # nothing: unsendable
    # Opening the ticket told the customer already (tickets.service): each test counts its own events only.
    conn.execute("DELETE FROM notifications")
    conn.commit()
    return {"ticket": ticket["id"], "contacts": contacts, "group": group}


def _rows(conn, **where: Any) -> list[dict[str, Any]]:
    clause = " AND ".join(f"{column} = %s" for column in where) or "true"
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT * FROM notifications WHERE {clause} ORDER BY id", list(where.values())).fetchall()


def _enqueue(conn, event: str, ticket_id: int, **kwargs: Any) -> int:
    with conn.cursor() as cur:
        count = notify(cur, event, ticket_id=ticket_id, at=kwargs.pop("at", datetime.now(UTC)), **kwargs)
    conn.commit()
    return count


def _config(*, smtp_port: int | None = None, http: str | None = None, **overrides: Any) -> DeliveryConfig:
    return DeliveryConfig(smtp=parse_smtp_url(f"smtp://127.0.0.1:{smtp_port}") if smtp_port else None,
                          mail_from="IronSight <notify@ironsight.example>",
                          sms_gateway_url=f"{http}/sms" if http else None, webhook_secret=SECRET,
                          **{"timeout_s": 2.0, "lease_s": 60.0, **overrides})


def _webhook_to(conn, group: str, url: str) -> None:
    conn.execute("UPDATE service_groups SET webhook_url = %s WHERE name = %s", (url, group))
    conn.commit()


# --- templates ---


def test_every_event_has_english_and_chinese_templates_rendered_with_the_facts():
    assert set(EVENTS) == set(TEMPLATES) and len(EVENTS) == 11
    for event in EVENTS:
        assert {"en", "zh"} <= set(TEMPLATES[event]), event
        for language in ("en", "zh"):
            message = render(event, language, {})  # nothing given: every fact shows as missing, nothing raises
            assert message.subject and message.body and "$" not in message.subject + message.body
    facts = {"ticket": 42, "equipment": "EX-7", "title": "Leak", "engineer": "Li Na",
             "eta": datetime(2030, 1, 2, 3, 4, 59, tzinfo=UTC), "arrive_by": datetime(2030, 1, 2, 5, 0, tzinfo=UTC)}
    english = render("engineer_dispatched", "en", facts)
    assert english.subject == "Engineer on the way to EX-7 (work order #42)"
    assert "Li Na" in english.body and "2030-01-02 03:04 UTC" in english.body and "2030-01-02 05:00 UTC" in english.body
    chinese = render("engineer_dispatched", "zh-CN", facts)
    assert chinese.subject == "工程师正在前往 EX-7（工单 #42）" and "预计到达时间：2030-01-02 03:04 UTC" in chinese.body
    assert render("engineer_dispatched", "fr-FR", facts) == english  # no French: English
    assert MISSING in render("late_arrival", "en", {"ticket": 1}).body


def test_facts_are_data_not_templates():
    hostile = "$engineer ${ticket} {0.__class__} %s $$"
    message = render("work_order_opened", "en", {"ticket": 7, "title": hostile, "engineer": "SECRET"})
    assert f"#7 opened: {hostile}" in message.subject and "SECRET" not in message.subject + message.body
    with pytest.raises(ValueError):
        render("no_such_event", "en", {})


# --- recipients and the outbox ---


def test_a_customer_event_reaches_the_tickets_contact_and_those_who_hear_everything(conn, world, monkeypatch):
    monkeypatch.setenv("IRONSIGHT_NOTIFY_WEBHOOK_URL", "https://integration.example/hook")
    contacts = world["contacts"]
    with conn.cursor() as cur:
        count = notify(cur, "engineer_dispatched", ticket_id=world["ticket"], at=AT, customer=True)
        # In the caller's transaction: a rollback takes the notifications with it.
        assert len(_rows(conn)) == count
        conn.rollback()
    assert _rows(conn) == []
    assert _enqueue(conn, "engineer_dispatched", world["ticket"], at=AT, customer=True) == count == 5
    rows = {row["recipient"]: row for row in _rows(conn)}
    assert set(rows) == {f"contact:{contacts[name]}" for name in ("wang", "sms", "app", "nobody")} | {"integration"}
    wang = rows[f"contact:{contacts['wang']}"]
    assert (wang["channel"], wang["address"], wang["state"]) == ("email", "wang@nordbau.example", "pending")
    assert wang["subject"] == f"工程师正在前往 NB-EX-1（工单 #{world['ticket']}）"
    assert "Li Na" in wang["body"] and "2030-05-06 08:08 UTC" in wang["body"] and "2030-05-06 09:08 UTC" in wang["body"]
    assert wang["facts"]["customer"] == "Nordbau GmbH" and wang["facts"]["engineer"] == "Li Na"
    sam = rows[f"contact:{contacts['sms']}"]
    assert (sam["channel"], sam["address"]) == ("sms", "+31612345678")
    assert sam["subject"].startswith("Engineer on the way")
    ann = rows[f"contact:{contacts['app']}"]  # app, no e-mail address: SMS
    assert (ann["channel"], ann["address"]) == ("sms", "+31687654321")
    nemo = rows[f"contact:{contacts['nobody']}"]
    assert nemo["state"] == "unsendable" and nemo["address"] is None and "neither" in nemo["reason"]
    hook = rows["integration"]
    assert (hook["channel"], hook["address"], hook["audience"]) == ("webhook", "https://integration.example/hook",
                                                                    "integration")
    with pytest.raises(ValueError):
        with conn.cursor() as cur:
            notify(cur, "engineer_teleported", ticket_id=world["ticket"], at=AT, customer=True)
    conn.rollback()


def test_a_ticket_with_nobody_to_tell_shows_it(conn, world):
    conn.execute("UPDATE customer_contacts SET notify_all = false")
    conn.execute("UPDATE tickets SET contact_id = NULL")
    conn.commit()
    assert _enqueue(conn, "work_order_opened", world["ticket"], customer=True) == 1
    (row,) = _rows(conn)
    assert row["state"] == "unsendable" and row["recipient"] == f"customer:{CUSTOMER}" and "no contact" in row["reason"]


def test_engineers_and_group_members_by_their_preferred_channel(conn, world):
    group = world["group"]
    with conn.cursor(row_factory=dict_row) as cur:  # a caller with dict rows works the same
        assert notify(cur, "job_assigned", ticket_id=world["ticket"], at=AT, engineer="eng-li") == 1
        assert notify(cur, "job_assigned", ticket_id=world["ticket"], at=AT, engineer="eng-bo") == 1
        count = notify(cur, "expert_consultation", ticket_id=world["ticket"], at=AT, group=group,
                       facts={"question": "Pump cavitation at 300 bar?"})
    conn.commit()
    assert count == 4
    rows = {row["recipient"]: row for row in _rows(conn)}
    li = rows["engineer:eng-li"]
    assert (li["channel"], li["address"], li["audience"]) == ("sms", "+8613800138000", "engineer")
    assert li["subject"].startswith("新任务") and "Nordbau GmbH" in li["body"]
    assert (rows["engineer:eng-bo"]["channel"], rows["engineer:eng-bo"]["address"]) == ("email", "bo@service.example")
    assert (rows[f"member:{group}/rd-1"]["channel"], rows[f"member:{group}/rd-1"]["address"]) == (
        "email", "rita@rd.example")
    zhou = rows[f"member:{group}/rd-2"]
    assert (zhou["channel"], zhou["address"]) == ("sms", "+8613900139000") and "请求专家会诊" in zhou["subject"]
    assert "Pump cavitation at 300 bar?" in zhou["body"] and group in zhou["body"]
    assert rows[f"member:{group}/rd-3"]["state"] == "unsendable"
    assert (rows[f"group:{group}"]["channel"], rows[f"group:{group}"]["address"]) == (
        "webhook", "http://127.0.0.1:9/never-called")
    with pytest.raises(LookupError), conn.cursor() as cur:
        notify(cur, "job_assigned", ticket_id=world["ticket"], at=AT, engineer="nobody-like-this")
    conn.rollback()


# --- delivery ---


def test_webhooks_and_sms_are_signed_and_carry_a_stable_idempotency_key(conn, world):
    receiver = HttpReceiver(free_port()).start()
    try:
        _webhook_to(conn, world["group"], f"{receiver.url}/hook")
        _enqueue(conn, "expert_consultation", world["ticket"], group=world["group"], facts={"question": "why?"})
        channels = Channels(_config(http=receiver.url))
        with psycopg.connect(conn.info.dsn) as worker_conn:
            assert deliver_round(worker_conn, channels) == 3  # the member without an address was never due
        channels.close()
        rows = {row["recipient"]: row for row in _rows(conn)}
        assert rows[f"member:{world['group']}/rd-1"]["state"] == "unsent"
        assert rows[f"member:{world['group']}/rd-1"]["reason"].startswith("no SMTP configured")
        assert len(receiver.requests) == 2 and all(r["verified"] for r in receiver.requests)
        hook = next(r for r in receiver.requests if r["path"] == "/hook")
        group_row = rows[f"group:{world['group']}"]
        assert hook["key"] == str(group_row["key"]) and group_row["state"] == "sent"
        assert {"event", "ticket", "recipient", "subject", "body", "facts", "created_at"} <= set(hook["json"])
        assert hook["json"]["ticket"] == world["ticket"] and hook["json"]["facts"]["question"] == "why?"
        sms = next(r for r in receiver.requests if r["path"] == "/sms")
        member = rows[f"member:{world['group']}/rd-2"]
        assert sms["json"] == {"to": "+8613900139000", "text": f"{member['subject']}\n{member['body']}",
                               "reference": str(member["key"])} and sms["key"] == str(member["key"])
        # The library's own check agrees, and refuses a changed body or an old timestamp.
        signature = hmac.new(SECRET.encode(), hook["timestamp"].encode() + b"." + hook["body"],
                             hashlib.sha256).hexdigest()
        assert verify(SECRET, hook["timestamp"], hook["body"], f"sha256={signature}")
        assert not verify(SECRET, hook["timestamp"], hook["body"] + b" ", f"sha256={signature}")
        assert not verify(SECRET, hook["timestamp"], hook["body"], f"sha256={signature}",
                          now=int(hook["timestamp"]) + 3600)
    finally:
        receiver.stop()


def _counted(channel: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("ironsight_notifications_total", {"channel": channel, "outcome": outcome}) or 0.0


def _attempts(conn) -> dict[int, list[bool]]:
    found: dict[int, list[bool]] = {}
    for notification_id, ok in conn.execute(
            "SELECT notification_id, ok FROM notification_attempts ORDER BY notification_id, id"):
        found.setdefault(notification_id, []).append(ok)
    conn.commit()
    return found


def test_a_channel_down_then_back_loses_nothing_and_sends_nothing_twice(conn, world, monkeypatch):
    smtp_port, http_port = free_port(), free_port()
    http_url = f"http://127.0.0.1:{http_port}"
    monkeypatch.setenv("IRONSIGHT_NOTIFY_WEBHOOK_URL", f"{http_url}/integration")
    _webhook_to(conn, world["group"], f"{http_url}/group")
    _enqueue(conn, "engineer_dispatched", world["ticket"], customer=True)
    _enqueue(conn, "expert_consultation", world["ticket"], group=world["group"], facts={"question": "?"})
    pending = _rows(conn, state="pending")
    assert len(pending) == 8 and {row["channel"] for row in pending} == {"email", "sms", "webhook"}
    retried_before = _counted("email", "retried")

    channels = Channels(_config(smtp_port=smtp_port, http=http_url))
    now = datetime.now(UTC) + timedelta(seconds=1)
    smtp = http = None
    try:
        with psycopg.connect(conn.info.dsn) as worker_conn:
            for _ in range(3):  # nothing listens: every attempt fails and is retried later
                assert deliver_round(worker_conn, channels, now=now) == 8
                assert deliver_round(worker_conn, channels, now=now) == 0  # not due again yet
                rows = _rows(conn)
                assert all(row["state"] in ("pending", "unsendable") for row in rows)
                assert all(row["next_try_at"] > now for row in rows if row["state"] == "pending")
                now = max(row["next_try_at"] for row in rows if row["state"] == "pending")
            assert all(oks == [False, False, False] for oks in _attempts(conn).values())
            assert _counted("email", "retried") >= retried_before + 6
            error = conn.execute("SELECT error FROM notification_attempts LIMIT 1").fetchone()[0]
            assert "Connect" in error or "refused" in error.lower()

            smtp, http = SmtpReceiver(smtp_port).start(), HttpReceiver(http_port).start()
            for _ in range(10):
                if not _rows(conn, state="pending"):
                    break
                now += timedelta(seconds=channels.config.retry_max_s)
                deliver_round(worker_conn, channels, now=now)
        assert not _rows(conn, state="pending") and len(_rows(conn, state="sent")) == 8
        assert all(oks == [False, False, False, True] for oks in _attempts(conn).values())
        # Everything arrived, exactly once.
        sent_rows = _rows(conn, state="sent")
        assert http.keys() == Counter(str(row["key"]) for row in sent_rows if row["channel"] != "email")
        assert Counter(m["Message-ID"] for m in smtp.messages) == Counter(
            f"<{row['key'].hex}@ironsight.example>" for row in sent_rows if row["channel"] == "email")
        sent = {row["recipient"]: row for row in sent_rows}
        chinese = next(m for m in smtp.messages if m["To"].addresses[0].addr_spec == "wang@nordbau.example")
        wang = sent[f"contact:{world['contacts']['wang']}"]
        assert chinese["Subject"] == wang["subject"]
        assert chinese.get_content().replace("\r\n", "\n").strip() == wang["body"]
        assert chinese["To"].addresses[0].display_name == "王伟"
    finally:
        channels.close()
        for server in (smtp, http):
            if server is not None:
                server.stop()


def test_a_crash_between_sending_and_recording_sends_again_with_the_same_keys(conn, world):
    receiver, smtp = HttpReceiver(free_port()).start(), SmtpReceiver(free_port()).start()
    channels = Channels(_config(smtp_port=smtp.port, http=receiver.url, lease_s=60.0))
    try:
        _webhook_to(conn, world["group"], f"{receiver.url}/group")
        _enqueue(conn, "expert_consultation", world["ticket"], group=world["group"], facts={"question": "?"})
        now = datetime.now(UTC) + timedelta(seconds=1)
        with psycopg.connect(conn.info.dsn) as worker_conn:
            claimed = claim(worker_conn, worker="doomed", lease_s=60.0, now=now)
            assert len(claimed.rows) == 3
            for row in claimed.rows:
                assert channels.send(row).ok  # … and the worker dies before recording it
            assert deliver_round(worker_conn, channels, now=now + timedelta(seconds=30)) == 0  # still leased
            assert deliver_round(worker_conn, channels, now=now + timedelta(seconds=61)) == 3
        assert len(_rows(conn, state="sent")) == 3
        # At least once: each went twice, with the same Idempotency-Key / Message-ID for the receiver to drop.
        assert sorted(receiver.keys().values()) == [2, 2]
        assert len(smtp.messages) == 2 and smtp.messages[0]["Message-ID"] == smtp.messages[1]["Message-ID"]
    finally:
        channels.close()
        receiver.stop()
        smtp.stop()


def test_two_workers_delivering_at_once_send_each_notification_once(conn, world):
    receiver, smtp = HttpReceiver(free_port()).start(), SmtpReceiver(free_port()).start()
    try:
        _webhook_to(conn, world["group"], f"{receiver.url}/group")
        for _ in range(15):
            _enqueue(conn, "expert_consultation", world["ticket"], group=world["group"], facts={"question": "?"})
        expected = len(_rows(conn, state="pending"))
        assert expected == 45
        config = _config(smtp_port=smtp.port, http=receiver.url)
        errors: list[BaseException] = []

        def work(name: str) -> None:
            channels = Channels(config)
            try:
                with psycopg.connect(conn.info.dsn) as worker_conn:
                    idle_rounds = 0
                    while idle_rounds < 3:
                        handled = deliver_round(worker_conn, channels, worker=name, limit=3)
                        idle_rounds = 0 if handled else idle_rounds + 1
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            finally:
                channels.close()

        threads = [threading.Thread(target=work, args=(f"worker-{i}",)) for i in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        assert len(_rows(conn, state="sent")) == expected
        assert sorted(receiver.keys().values()) == [1] * 30 and len(smtp.messages) == 15
        assert len({m["Message-ID"] for m in smtp.messages}) == 15
        assert all(oks == [True] for oks in _attempts(conn).values())
        workers = {w for (w,) in conn.execute("SELECT DISTINCT worker FROM notification_attempts")}
        assert workers <= {"worker-1", "worker-2"}
    finally:
        receiver.stop()
        smtp.stop()


def test_a_refusal_is_permanent_but_408_429_and_5xx_are_retried(conn, world):
    receiver = HttpReceiver(free_port(), mode=404).start()
    channels = Channels(_config(http=receiver.url))
    try:
        _webhook_to(conn, world["group"], f"{receiver.url}/group")
        now = datetime.now(UTC) + timedelta(seconds=1)
        with psycopg.connect(conn.info.dsn) as worker_conn:
            for status, state in ((404, "failed"), (400, "failed"), (408, "pending"), (429, "pending"),
                                  (503, "pending")):
                receiver.mode = status
                conn.execute("DELETE FROM notifications")
                conn.commit()
                _enqueue(conn, "expert_consultation", world["ticket"], group=world["group"])
                deliver_round(worker_conn, channels, now=now)
                row = _rows(conn, recipient=f"group:{world['group']}")[0]
                assert row["state"] == state, status
                code = conn.execute("SELECT status_code FROM notification_attempts WHERE notification_id = %s",
                                    (row["id"],)).fetchone()[0]
                assert code == status
                if state == "failed":
                    assert row["reason"] == f"HTTP {status}" and row["finished_at"] is not None
            # A channel that stays down is given up after the age limit, and says why.
            deliver_round(worker_conn, channels, now=now + timedelta(hours=25))
        row = _rows(conn, recipient=f"group:{world['group']}")[0]
        assert row["state"] == "failed" and row["reason"].startswith("gave up after 2 attempts")
        conn.commit()
    finally:
        channels.close()
        receiver.stop()


@pytest.mark.parametrize("mode", ["drip", "huge", "silent"])
def test_a_hostile_receiver_does_not_hold_the_worker(conn, world, mode):
    receiver = HttpReceiver(free_port(), mode=mode).start()
    channels = Channels(_config(http=receiver.url, timeout_s=1.0, lease_s=30.0))
    try:
        _webhook_to(conn, world["group"], f"{receiver.url}/group")
        _enqueue(conn, "expert_consultation", world["ticket"], group=world["group"])
        began = time.monotonic()
        with psycopg.connect(conn.info.dsn) as worker_conn:
            deliver_round(worker_conn, channels)
        assert time.monotonic() - began < 8  # two HTTP sends (webhook, SMS) of at most 1 s each, and the rest
        row = _rows(conn, recipient=f"group:{world['group']}")[0]
        (attempt,) = conn.execute("SELECT ok, error, reply FROM notification_attempts WHERE notification_id = %s",
                                  (row["id"],)).fetchall()
        if mode == "huge":  # a 200 is a 200; of the answer only the first KiB is read
            assert row["state"] == "sent" and attempt[0] and len(attempt[2]) <= 1024
        else:
            assert row["state"] == "pending" and not attempt[0] and "no complete answer within 1 s" in attempt[1]
    finally:
        channels.close()
        receiver.stop()


# --- what `ironsight run` shows ---


def test_the_local_sinks_keep_what_was_sent(conn, world, tmp_path: Path, monkeypatch):
    mail = MailSink(tmp_path / "mail").start()
    http = HttpSink(tmp_path, secret=SECRET).start()
    monkeypatch.setenv("IRONSIGHT_NOTIFY_WEBHOOK_URL", f"{http.url}/webhook")
    channels = Channels(_config(smtp_port=mail.port, http=http.url))
    try:
        _enqueue(conn, "engineer_dispatched", world["ticket"], customer=True)
        with psycopg.connect(conn.info.dsn) as worker_conn:
            deliver_round(worker_conn, channels)
        assert len(_rows(conn, state="sent")) == 4
        (eml,) = (tmp_path / "mail").glob("*.eml")
        message = message_from_bytes(eml.read_bytes(), policy=default_policy)
        assert message["Subject"].startswith("工程师正在前往") and "Li Na" in message.get_content()
        sms = [json.loads(p.read_text()) for p in (tmp_path / "sms").glob("*.json")]
        assert len(sms) == 2 and all(s["signature_verified"] for s in sms)
        (hook,) = (tmp_path / "webhook").glob("*.json")
        assert json.loads(hook.read_text())["payload"]["event"] == "engineer_dispatched"
        import httpx

        assert httpx.post(f"{http.url}/webhook", json={"forged": True}).status_code == 401
        assert len(list((tmp_path / "webhook").glob("*.json"))) == 1
    finally:
        channels.close()
        mail.stop()
        http.stop()


def test_ironsight_run_starts_a_notify_worker_with_a_metrics_port_after_the_others():
    from core.settings import Settings
    from ironsight.supervisor import Supervisor

    supervisor = Supervisor(Settings(), controllers=1, fault_share=0.0, faults=(), interval_s=1.0,
                            diagnostics_workers=2)
    names = [worker.name for worker in supervisor.plan(Path("logs"))]
    assert "notify" in names
    ports = metrics.run_ports(None, names)
    assert ports["diagnostics-2"] == 9407 and ports["notify"] == 9408
