"""Customers as records (tables ``customers``, ``customer_contacts``, ``contact_phones``): the
company behind ``equipment.customer``, its contacts and their phone numbers.

Phone numbers are stored in E.164 (``+8613812345678``), parsed with ``phonenumbers`` (Google's
libphonenumber) from any common spelling: spaces, dashes, brackets, a ``00`` or ``+`` prefix, or a
national number in the deployment's default region (``IRONSIGHT_PHONE_REGION``). A caller's number
is matched exactly first, then by its last digits (a number given without its country code, or
the end of one): ranked, the most digits in common first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import phonenumbers
import psycopg
from psycopg.rows import dict_row

PREFERRED_CHANNELS = ("phone", "sms", "email", "app")
# A partial number must have at least this many digits to be looked up (fewer match too many).
MIN_PARTIAL_DIGITS = 6
_DIGITS = re.compile(r"\D")


class InvalidPhone(ValueError):
    pass


def normalise_phone(raw: str, region: str) -> str:
    """``raw`` in E.164; raises InvalidPhone for what is not a possible phone number."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"not a phone number: {raw[:40]!r} ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidPhone(f"not a possible phone number: {raw[:40]!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def digits_of(raw: str) -> str:
    return _DIGITS.sub("", raw)


@dataclass(frozen=True, slots=True)
class PhoneMatch:
    contact_id: int
    customer_id: str
    e164: str
    # Digits the number has in common with the caller's, from the end; an exact match has them all.
    matched_digits: int
    exact: bool


def find_by_phone(conn: psycopg.Connection, raw: str, region: str, *, limit: int = 10) -> list[PhoneMatch]:
    """Contacts whose number is the caller's (exactly, once normalised), else ends with the digits
    given (a national number without its country code, or the last digits of one), best first."""
    try:
        e164: str | None = normalise_phone(raw, region)
    except InvalidPhone:
        e164 = None
    if e164 is not None:
        rows = conn.execute("SELECT contact_id, c.customer_id, e164 FROM contact_phones p "
                            "JOIN customer_contacts c ON c.id = p.contact_id WHERE e164 = %s "
                            "ORDER BY contact_id LIMIT %s", (e164, limit)).fetchall()
        if rows:
            return [PhoneMatch(r[0], r[1], r[2], len(r[2]) - 1, True) for r in rows]
    # The digits may carry a trunk prefix (a national number's leading 0) or be only the end of a
    # number, whose own leading zeros count: both are tried, the longer match ranks first.
    digits = digits_of(raw)
    patterns = sorted({p for p in (digits, digits.lstrip("0")) if len(p) >= MIN_PARTIAL_DIGITS}, key=len,
                      reverse=True)
    if not patterns:
        return []
    found: dict[int, PhoneMatch] = {}
    for pattern in patterns:  # one indexed LIKE each: LIKE ANY would read every number
        rows = conn.execute(
            "SELECT contact_id, c.customer_id, e164 FROM contact_phones p "
            "JOIN customer_contacts c ON c.id = p.contact_id "
            "WHERE reverse(e164) LIKE %s ORDER BY length(e164), contact_id LIMIT %s",
            (pattern[::-1] + "%", limit)).fetchall()
        for contact_id, customer_id, e164 in rows:
            found.setdefault(contact_id, PhoneMatch(contact_id, customer_id, e164, len(pattern), False))
    return sorted(found.values(), key=lambda m: (-m.matched_digits, len(m.e164), m.contact_id))[:limit]


# --- records ---

_CUSTOMER_COLUMNS = "id, name, tier, contract_number, contract_until, notes, created_at, updated_at"
_CONTACT_COLUMNS = """c.id, c.customer_id, c.name, c.role, c.email, c.preferred_channel, c.language, c.notify_all,
    c.created_at,
    c.updated_at, coalesce((SELECT array_agg(p.e164 ORDER BY p.e164) FROM contact_phones p
                            WHERE p.contact_id = c.id), '{}') AS phones"""


def get_customer(conn: psycopg.Connection, customer_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = %s", (customer_id,)).fetchone()


def list_customers(conn: psycopg.Connection, *, query: str | None, limit: int, offset: int
                   ) -> tuple[list[dict[str, Any]], int]:
    where = ""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if query:
        where = "WHERE id ILIKE %(q)s OR name ILIKE %(q)s"
        params["q"] = "%" + query.replace("%", r"\%").replace("_", r"\_") + "%"
    with conn.cursor(row_factory=dict_row) as cur:
        count = cur.execute(f"SELECT count(*) AS n FROM customers {where}", params).fetchone()["n"]  # type: ignore[index]
        rows = cur.execute(f"SELECT {_CUSTOMER_COLUMNS} FROM customers {where} ORDER BY id "
                           "LIMIT %(limit)s OFFSET %(offset)s", params).fetchall()
    return rows, count


def upsert_customer(conn: psycopg.Connection, customer_id: str, fields: dict[str, Any], *, create: bool
                    ) -> dict[str, Any] | None:
    """Create (``create``) or change a customer; only the fields given change. None: no such customer
    to change. Raises LookupError for an unknown tier."""
    columns = [c for c in ("name", "tier", "contract_number", "contract_until", "notes") if c in fields]
    with conn.transaction():
        if fields.get("tier") is not None and conn.execute(
                "SELECT 1 FROM contract_tiers WHERE name = %s", (fields["tier"],)).fetchone() is None:
            raise LookupError(f"no contract tier {fields['tier']!r}")
        if create:
            values = {"name": customer_id, **{c: fields[c] for c in columns}}
            placeholders = ", ".join(["%s"] * len(values))
            conn.execute(f"INSERT INTO customers (id, {', '.join(values)}) VALUES (%s, {placeholders})",
                         (customer_id, *values.values()))
        elif columns:
            updated = conn.execute(
                f"UPDATE customers SET {', '.join(f'{c} = %s' for c in columns)}, updated_at = now() WHERE id = %s",
                (*(fields[c] for c in columns), customer_id)).rowcount
            if not updated:
                return None
        return get_customer(conn, customer_id)


def delete_customer(conn: psycopg.Connection, customer_id: str) -> bool:
    """Delete a customer without machines (its contacts go with it); raises ValueError while it has some."""
    with conn.transaction():
        if conn.execute("SELECT 1 FROM equipment WHERE customer = %s LIMIT 1", (customer_id,)).fetchone():
            raise ValueError(f"customer {customer_id!r} still has machines")
        return conn.execute("DELETE FROM customers WHERE id = %s", (customer_id,)).rowcount > 0


def list_contacts(conn: psycopg.Connection, customer_id: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {_CONTACT_COLUMNS} FROM customer_contacts c WHERE c.customer_id = %s "
                           "ORDER BY c.id", (customer_id,)).fetchall()


def get_contacts(conn: psycopg.Connection, contact_ids: list[int]) -> dict[int, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_CONTACT_COLUMNS} FROM customer_contacts c WHERE c.id = ANY(%s)",
                           (contact_ids,)).fetchall()
    return {row["id"]: row for row in rows}


def save_contact(conn: psycopg.Connection, customer_id: str, contact_id: int | None, fields: dict[str, Any],
                 region: str) -> dict[str, Any] | None:
    """Create (``contact_id`` None) or change a contact; ``phones`` (when given) replaces its numbers,
    each normalised (InvalidPhone for one that is not a number). None: no such contact of this customer."""
    phones = None if fields.get("phones") is None else sorted({normalise_phone(p, region) for p in fields["phones"]})
    columns = [c for c in ("name", "role", "email", "preferred_channel", "language", "notify_all") if c in fields]
    with conn.transaction():
        if contact_id is None:
            contact_id = conn.execute(
                f"INSERT INTO customer_contacts (customer_id, {', '.join(columns)}) "
                f"VALUES (%s, {', '.join(['%s'] * len(columns))}) RETURNING id",
                (customer_id, *(fields[c] for c in columns))).fetchone()[0]  # type: ignore[index]
        else:
            found = conn.execute(
                f"UPDATE customer_contacts SET {', '.join([*(f'{c} = %s' for c in columns), 'updated_at = now()'])} "
                "WHERE id = %s AND customer_id = %s", (*(fields[c] for c in columns), contact_id, customer_id)).rowcount
            if not found:
                return None
        if phones is not None:
            conn.execute("DELETE FROM contact_phones WHERE contact_id = %s", (contact_id,))
            for e164 in phones:
                conn.execute("INSERT INTO contact_phones (contact_id, e164) VALUES (%s, %s)", (contact_id, e164))
        return get_contacts(conn, [contact_id])[contact_id]


def delete_contact(conn: psycopg.Connection, customer_id: str, contact_id: int) -> bool:
    with conn.transaction():
        return conn.execute("DELETE FROM customer_contacts WHERE id = %s AND customer_id = %s",
                            (contact_id, customer_id)).rowcount > 0
