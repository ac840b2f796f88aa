"""What each event says, in each language: a subject and a body per event, as data.

Templates use ``string.Template`` placeholders (``$ticket``, ``${engineer}``). The facts are
values, never templates: a fact that holds ``$title`` or ``{0.__class__}`` is shown as written,
so text from a customer or an engineer cannot reach into other facts. A fact a template names but
the event did not give is shown as ``—``. Times are shown in UTC to the minute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from string import Template
from typing import Any

DEFAULT_LANGUAGE = "en"
# What a template shows for a fact the event did not give.
MISSING = "—"


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    body: str


# event → language → (subject, body). Every event has English; the recipient's language picks.
TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "work_order_opened": {
        "en": ("Work order #$ticket opened: $title",
               "We have opened work order #$ticket for your machine $equipment: $title.\n"
               "We will let you know as soon as an engineer is on the way."),
        "zh": ("工单 #$ticket 已创建：$title",
               "我们已为您的设备 $equipment 创建工单 #$ticket：$title。\n工程师出发后我们会立即通知您。"),
    },
    "engineer_dispatched": {
        "en": ("Engineer on the way to $equipment (work order #$ticket)",
               "$engineer is on the way to your machine $equipment for work order #$ticket ($title).\n"
               "Expected arrival: $eta. Promised arrival by: $arrive_by."),
        "zh": ("工程师正在前往 $equipment（工单 #$ticket）",
               "工程师 $engineer 正在前往您的设备 $equipment，处理工单 #$ticket（$title）。\n"
               "预计到达时间：$eta。承诺到达时间：$arrive_by 之前。"),
    },
    "job_assigned": {
        "en": ("New job #$ticket: $equipment",
               "You have been assigned work order #$ticket for $customer's machine $equipment: $title.\n"
               "Be on site by $arrive_by."),
        "zh": ("新任务 #$ticket：$equipment",
               "您被指派处理 $customer 的设备 $equipment 的工单 #$ticket：$title。\n请在 $arrive_by 之前到达现场。"),
    },
    "late_arrival": {
        "en": ("Engineer delayed for work order #$ticket",
               "$engineer is running late to your machine $equipment (work order #$ticket).\n"
               "New expected arrival: $eta. We had promised arrival by $arrive_by. We apologise for the delay."),
        "zh": ("工单 #$ticket 的工程师将延迟到达",
               "工程师 $engineer 前往您的设备 $equipment（工单 #$ticket）将会延迟。\n"
               "新的预计到达时间：$eta。原承诺到达时间：$arrive_by。对此我们深表歉意。"),
    },
    "engineer_arrived": {
        "en": ("Engineer on site at $equipment (work order #$ticket)",
               "$engineer has arrived at your machine $equipment for work order #$ticket ($title)."),
        "zh": ("工程师已到达 $equipment（工单 #$ticket）",
               "工程师 $engineer 已到达您的设备 $equipment 现场，处理工单 #$ticket（$title）。"),
    },
    "work_order_resolved": {
        "en": ("Work order #$ticket resolved",
               "Work order #$ticket for your machine $equipment ($title) has been resolved.\n"
               "We will call you shortly to hear how satisfied you are."),
        "zh": ("工单 #$ticket 已解决",
               "您的设备 $equipment 的工单 #$ticket（$title）已解决。\n我们将很快回访，了解您对服务的满意度。"),
    },
    "callback_due": {
        "en": ("Callback due for work order #$ticket",
               "Please call $customer back about work order #$ticket ($title, machine $equipment) by $due_at."),
        "zh": ("工单 #$ticket 需要回访",
               "请在 $due_at 之前回访 $customer，了解工单 #$ticket（$title，设备 $equipment）的情况。"),
    },
    "complaint_assigned": {
        "en": ("Complaint about work order #$ticket for $department (round $round)",
               "A complaint by $customer about work order #$ticket ($title, machine $equipment) has been sent to "
               "$department.\nRound $round; the answer is due by $answer_due."),
        "zh": ("工单 #$ticket 的投诉已转交 $department（第 $round 轮）",
               "$customer 对工单 #$ticket（$title，设备 $equipment）的投诉已转交 $department。\n"
               "第 $round 轮，请在 $answer_due 之前答复。"),
    },
    "complaint_deadline_near": {
        "en": ("Complaint answer due soon: work order #$ticket",
               "The answer of $department to the complaint about work order #$ticket ($title) is due by "
               "$answer_due (round $round)."),
        "zh": ("投诉答复即将到期：工单 #$ticket",
               "$department 对工单 #$ticket（$title）投诉的答复须在 $answer_due 之前完成（第 $round 轮）。"),
    },
    "complaint_escalated": {
        "en": ("Complaint escalated to management: work order #$ticket",
               "The complaint by $customer about work order #$ticket ($title, machine $equipment) was not settled "
               "by $department after $round rounds and is now with management."),
        "zh": ("投诉已升级至管理层：工单 #$ticket",
               "$customer 对工单 #$ticket（$title，设备 $equipment）的投诉经 $department 处理 $round 轮仍未解决，"
               "现已升级至管理层。"),
    },
    "expert_consultation": {
        "en": ("Expert consultation requested: work order #$ticket",
               "$group is asked about work order #$ticket ($title, machine $equipment):\n$question"),
        "zh": ("请求专家会诊：工单 #$ticket",
               "请 $group 就工单 #$ticket（$title，设备 $equipment）提供意见：\n$question"),
    },
}

EVENTS: tuple[str, ...] = tuple(TEMPLATES)
LANGUAGES: tuple[str, ...] = tuple(sorted({language for texts in TEMPLATES.values() for language in texts}))


class _Shown(dict[str, str]):
    """The facts as shown; a fact the event did not give is shown as MISSING."""

    def __missing__(self, key: str) -> str:
        return MISSING


def show(value: Any) -> str:
    """One fact as text: times in UTC to the minute, nothing as MISSING."""
    if value is None:
        return MISSING
    if isinstance(value, datetime):
        at = value.astimezone(UTC) if value.tzinfo is not None else value
        return f"{at:%Y-%m-%d %H:%M} UTC"
    return str(value)


def template_language(language: str | None, event: str) -> str:
    """The template language for a recipient's language tag (``zh-CN`` → ``zh``), else English."""
    base = (language or DEFAULT_LANGUAGE).split("-")[0].lower()
    return base if base in TEMPLATES[event] else DEFAULT_LANGUAGE


def render(event: str, language: str | None, facts: Mapping[str, Any]) -> Message:
    """The subject and body of ``event`` in the recipient's language, with the facts filled in."""
    if event not in TEMPLATES:
        raise ValueError(f"unknown notification event {event!r}; known: {', '.join(EVENTS)}")
    subject, body = TEMPLATES[event][template_language(language, event)]
    shown = _Shown({name: show(value) for name, value in facts.items()})
    # substitute, not safe_substitute: the mapping answers every name, and a mistake in our own
    # templates (a stray "$") should fail loudly in the tests rather than reach a customer.
    return Message(Template(subject).substitute(shown), Template(body).substitute(shown))
