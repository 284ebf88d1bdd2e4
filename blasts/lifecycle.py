"""A blast's lifecycle: blast_move, the only writer of Blast.state, and each move people and senders make."""

from contextlib import nullcontext
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .alerts import alert_raise
from .audit import SYSTEM, Actor, Did, audit_record
from .models import (
    Alert,
    AuditRecord,
    Blast,
    BlastRecipient,
    StatusHistory,
)
from .services import recipient_advance
from .statuses import ACTIVE, BLAST_MOVES, OPEN
from .text import fit

Status = BlastRecipient.Status
Source = StatusHistory.Source


# What a person may do to a blast in each state: (action, label).
BLAST_ACTIONS = {
    Blast.State.DRAFT: [("send", "Send"), ("cancel", "Cancel")],
    Blast.State.QUEUED: [("pause", "Pause"), ("cancel", "Cancel")],
    Blast.State.SENDING: [("pause", "Pause"), ("cancel", "Cancel")],
    Blast.State.PAUSED: [("resume", "Resume"), ("cancel", "Cancel")],
    Blast.State.COMPLETED: [("resend_unknown", "Resend unknown")],
}


class BlastStateError(ValidationError):
    """A lifecycle change the blast's state does not allow; its message is for people."""


def _states_words(states) -> str:
    names = [Blast.State(state).label.lower() for state in states]
    return " or ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


def blast_move(
    *, blast: Blast, to: Blast.State, allowed_from, verb: str, did: Did | None, by: Actor = SYSTEM,
    reason: str = "", **fields,
) -> None:  # fmt: skip
    """The only writer of Blast.state: one conditional UPDATE from one of `allowed_from` to `to`,
    and the audit row `did` (None: a move nobody needs to read about, a sender starting).

    Each move must be one statuses.BLAST_MOVES allows. When the blast is in none of `allowed_from`
    (now, not when it was read) nothing changes and BlastStateError says so, e.g. "Only a paused
    blast can be resumed; this one is draft."
    """
    if any(to not in BLAST_MOVES[state] for state in allowed_from):
        raise ValueError(f"no blast moves from {allowed_from} to {to}")
    changes = {"state": to, "state_reason": fit(Blast, "state_reason", reason), **fields}
    with transaction.atomic() if did else nullcontext():  # the move and its audit row, or neither
        moved = Blast.objects.filter(pk=blast.pk, state__in=allowed_from).update(**changes)
        if moved and did:
            audit_record(by, did, blast=blast, **({"reason": changes["state_reason"]} if reason else {}))
    if moved:
        for name, value in changes.items():  # plain values: the row now holds exactly these
            setattr(blast, name, value)
        return
    blast.refresh_from_db()  # to say what it is now
    raise BlastStateError(
        f"Only a {_states_words(allowed_from)} blast can be {verb}; "
        f"this one is {blast.get_state_display().lower()}."
    )


def blast_queue(*, blast: Blast, by: Actor = SYSTEM) -> None:
    """Hand a draft blast to the senders; they send it at its scheduled time, or now."""
    if not blast.recipients.filter(is_canary=False).exists():
        raise ValidationError("The blast has no recipients.")
    blast_move(
        blast=blast,
        to=Blast.State.QUEUED,
        allowed_from=[Blast.State.DRAFT],
        verb="sent",
        did=Did.QUEUED,
        by=by,
    )


def blast_start(*, blast: Blast) -> None:
    """A sender's first send of a queued blast (again after a resume): started_at is when this run began,
    and the delivery-health breaker judges only the sends made since."""
    blast_move(
        blast=blast, to=Blast.State.SENDING, allowed_from=[Blast.State.QUEUED], verb="started", did=None,
        started_at=timezone.now(),
    )  # fmt: skip


def blast_pause(*, blast: Blast, reason: str = "Paused by a person.", by: Actor = SYSTEM) -> None:
    """Stop sending after the message in flight; resume picks up where it stopped. A pause nobody
    asked for (the breakers, a stale schedule) alerts people: the blast needs one."""
    blast_move(
        blast=blast, to=Blast.State.PAUSED, allowed_from=ACTIVE, verb="paused", did=Did.PAUSED, by=by,
        reason=reason,
    )  # fmt: skip
    if by.via == AuditRecord.Via.SYSTEM:
        alert_raise(
            kind=Alert.Kind.PAUSED, blast=blast, text=f"Blast “{blast}” paused itself: {blast.state_reason}"
        )


def blast_resume(*, blast: Blast, by: Actor = SYSTEM) -> None:
    """Send the rest. Only queued recipients are ever sent, so nothing goes out twice."""
    fields = {"failure_streak": 0, "failure_kind": ""}
    if blast.scheduled_at and blast.scheduled_at < timezone.now():
        fields["scheduled_at"] = None  # a person confirmed a late scheduled blast: send now
    blast_move(
        blast=blast,
        to=Blast.State.QUEUED,
        allowed_from=[Blast.State.PAUSED],
        verb="resumed",
        did=Did.RESUMED,
        by=by,
        **fields,
    )


def blast_cancel(*, blast: Blast, reason: str = "Cancelled by a person.", by: Actor = SYSTEM) -> None:
    """Stop for good: recipients not sent yet stay unsent."""
    blast_move(
        blast=blast, to=Blast.State.CANCELLED, allowed_from=OPEN, verb="cancelled", reason=reason,
        did=Did.CANCELLED, by=by,
        finished_at=timezone.now(),
    )  # fmt: skip


def blast_complete(*, blast: Blast, now: datetime | None = None) -> None:
    """Nothing is left to send (queued or in flight): the blast is done."""
    blast_move(
        blast=blast,
        to=Blast.State.COMPLETED,
        allowed_from=ACTIVE,
        verb="completed",
        did=Did.COMPLETED,
        finished_at=now or timezone.now(),
    )
    alert_raise(kind=Alert.Kind.COMPLETED, blast=blast, text=f"Blast “{blast}” completed.")


def blast_resend_unknown(*, blast: Blast, by: Actor = SYSTEM) -> int:
    """An operator's explicit choice: queue again the recipients whose send outcome is unknown.

    Some of them may have received the message already; that is why this never happens by itself.
    """
    if blast.state == Blast.State.CANCELLED:
        raise BlastStateError("A cancelled blast cannot be resent.")
    unknown = blast.recipients.filter(status=Status.UNKNOWN).values_list("pk", flat=True)
    queued = sum(
        recipient_advance(
            recipient=pk,
            status=Status.QUEUED,
            source=Source.MANUAL,
            actor=by.user,
            reason="Resent by an operator",
            also={"next_attempt_at": None},
        )
        for pk in list(unknown)
    )
    if not queued:
        raise BlastStateError("No recipient of this blast has an unknown outcome: nothing to resend.")
    if blast.state == Blast.State.COMPLETED:
        blast_move(
            blast=blast,
            to=Blast.State.QUEUED,
            allowed_from=[Blast.State.COMPLETED],
            verb="resent",
            did=None,  # the audit row below says it
            finished_at=None,
        )
    audit_record(by, Did.RESENT_UNKNOWN, blast=blast, recipients=queued)
    return queued
