"""The work-order state machine as data: every action, the states it applies in, where it leads.

The loop:

    created ─accept─► accepted ─start_remote_diagnosis─► remote_diagnosis ─resolve_remote─► resolved
                         │  ▲                                   │
                         │  └──────────── return ◄──┐           │
                         └──dispatch──► dispatched ─┴─engineer_accept─► en_route ─arrive─► on_site
                                          ▲  (from remote_diagnosis too)                      │
                                                                                     resolve ─┘
    resolved ─(callback survey, all scores ≥ 3)─► closed
    resolved ─(callback survey, a score ≤ 2)───► complaint ─(department answers, checking callback:
                                                            satisfied)─► closed
    resolved ─(callback: customer unreachable)──► closed

A complaint is worked outside the state machine (tickets.complaints): it goes to the responsible
department with a deadline, the department answers, a second callback checks it; a customer still
unhappy sends it back (the ticket stays in ``complaint``), and after too many rounds management
closes it. A complaint raised directly (``POST /complaints``) moves a ticket not yet being worked on,
or a resolved one, into ``complaint`` too.

Besides: ``reject`` / ``cancel`` with a reason end a ticket; ``escalate`` hands it to an expert
group (R&D, supplier) and ``reassign`` gives it back in the state it was escalated from;
``follow_up`` and ``urge`` record a note on any open ticket without changing its state.

A transition whose ``target`` is ``None`` keeps the state; ``PREVIOUS`` returns to the state saved
when the ticket was escalated. ``own_endpoint`` actions are taken by the endpoint of what causes
them (a callback's result, a complaint), never through ``POST /tickets/{id}/actions/{action}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import IronSightError

STATES = ("created", "accepted", "remote_diagnosis", "escalated", "dispatched", "en_route", "on_site",
          "resolved", "complaint", "closed", "rejected", "cancelled")
TERMINAL_STATES = ("closed", "rejected", "cancelled")
OPEN_STATES = tuple(s for s in STATES if s not in TERMINAL_STATES)
# Open and still being worked on: a new alarm for the machine belongs to this ticket. A resolved
# ticket waiting for its callback is finished work; an alarm after the repair is a new incident.
ACTIVE_STATES = tuple(s for s in OPEN_STATES if s not in ("resolved", "complaint"))

PREVIOUS = "@previous"

# Where an expert group can be asked: wherever someone is diagnosing the fault.
_ESCALATABLE = ("accepted", "remote_diagnosis", "on_site")
# Rejecting is the dispatcher's call before anyone is sent; cancelling is possible until resolution.
_REJECTABLE = ("created", "accepted", "remote_diagnosis", "escalated")
# A complaint raised directly moves a ticket nobody is working on yet, or a resolved one.
_COMPLAINABLE = ("created", "accepted", "resolved")
_CANCELLABLE = ("created", "accepted", "remote_diagnosis", "escalated", "dispatched", "en_route", "on_site")


class TransitionError(IronSightError):
    """An action that is not allowed in the ticket's current state (HTTP 409)."""


class MissingFields(IronSightError):
    """An action's body lacks a field the action requires (HTTP 422)."""


class UnknownAction(IronSightError):
    """No such action (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class Transition:
    action: str
    sources: tuple[str, ...]
    target: str | None          # None: the state does not change (an event only)
    requires: tuple[str, ...] = ()
    event: str = ""             # the ticket_events name; the action's name when empty
    own_endpoint: bool = False  # taken through a callback or complaint endpoint, not POST …/actions/{action}
    description: str = ""

    @property
    def event_name(self) -> str:
        return self.event or self.action


TRANSITIONS: tuple[Transition, ...] = (
    Transition("accept", ("created",), "accepted", event="accepted",
               description="a dispatcher takes the ticket (stops the response timer)"),
    Transition("start_remote_diagnosis", ("accepted",), "remote_diagnosis", event="remote_diagnosis_started",
               description="the dispatcher works on it remotely with the customer"),
    Transition("resolve_remote", ("remote_diagnosis",), "resolved", requires=("work_done",), event="resolved",
               description="solved remotely, no visit"),
    Transition("dispatch", ("accepted", "remote_diagnosis"), "dispatched", requires=("engineer",),
               event="dispatched", description="sent to an engineer; `arrive_by` is the promised arrival"),
    Transition("engineer_accept", ("dispatched",), "en_route", event="engineer_accepted",
               description="the engineer accepts and sets off"),
    Transition("return", ("dispatched",), "accepted", requires=("reason",), event="returned",
               description="the engineer returns it with a reason; back to the dispatch queue"),
    Transition("arrive", ("en_route",), "on_site", event="arrived", description="the engineer is on site"),
    Transition("resolve", ("on_site",), "resolved", requires=("work_done", "first_time_fix"), event="resolved",
               description="repaired on site: work done, parts used, first-time fix or not"),
    Transition("callback", ("resolved",), "closed", event="closed", own_endpoint=True,
               description="callback survey without a low score closes the ticket"),
    Transition("complain", _COMPLAINABLE, "complaint", event="complaint_opened", own_endpoint=True,
               description="a callback survey with a score of 2 or less, or a complaint raised directly"),
    Transition("second_callback", ("complaint",), "closed", event="second_callback", own_endpoint=True,
               description="the checking callback after the department's answer: the customer is satisfied"),
    Transition("close_complaint", ("complaint",), "closed", requires=("reason",), event="closed_by_management",
               own_endpoint=True, description="management closes a complaint sent back too often"),
    Transition("close_unreachable", ("resolved",), "closed", event="closed_unreachable", own_endpoint=True,
               description="the callback after the repair reached nobody after every attempt"),
    Transition("reject", _REJECTABLE, "rejected", requires=("reason",), event="rejected",
               description="not a valid work order (duplicate, not covered, no fault)"),
    Transition("cancel", _CANCELLABLE, "cancelled", requires=("reason",), event="cancelled",
               description="withdrawn, e.g. by the customer"),
    Transition("escalate", _ESCALATABLE, "escalated", requires=("expert_group",), event="escalated",
               description="handed to an expert group (R&D, supplier)"),
    Transition("reassign", ("escalated",), PREVIOUS, event="reassigned",
               description="the expert group gives it back, to the state it was escalated from"),
    Transition("follow_up", OPEN_STATES, None, requires=("reason",), event="followed_up",
               description="a note: the customer or an engineer was contacted"),
    Transition("urge", OPEN_STATES, None, requires=("reason",), event="urged",
               description="an overdue ticket is urged"),
)

BY_ACTION: dict[str, Transition] = {t.action: t for t in TRANSITIONS}
ACTIONS = tuple(t.action for t in TRANSITIONS if not t.own_endpoint)


def transition_for(action: str, state: str, *, own_endpoint: bool = False) -> Transition:
    """The transition ``action`` takes from ``state``; raises when there is none."""
    transition = BY_ACTION.get(action)
    if transition is None or (transition.own_endpoint and not own_endpoint):
        raise UnknownAction(f"unknown action {action!r}; actions: {', '.join(ACTIONS)}")
    if state not in transition.sources:
        raise TransitionError(
            f"cannot {action} a ticket in state {state!r}; {action} is allowed from: {', '.join(transition.sources)}"
        )
    return transition


def check_required(transition: Transition, fields: dict[str, object]) -> None:
    missing = [name for name in transition.requires if fields.get(name) in (None, "")]
    if missing:
        raise MissingFields(f"{transition.action} needs {', '.join(missing)}")


def legal_pairs() -> list[tuple[str, str]]:
    """Every (state, action) that is allowed, for tests and documentation."""
    return [(state, t.action) for t in TRANSITIONS for state in t.sources]
