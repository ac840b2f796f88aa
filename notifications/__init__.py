"""Notifications that reach people: an outbox written in the transaction of the event that causes
it, rendered in the recipient's language, delivered by e-mail, SMS gateway or signed webhook, every
attempt recorded (docs/notifications.md).

Other packages call ``notify(cur, event, ticket_id=…, at=…, customer=…, engineer=…, group=…)`` in
the transaction of their event. May import: ``core``.
"""

from notifications.outbox import notify
from notifications.templates import EVENTS

__all__ = ["EVENTS", "notify"]
