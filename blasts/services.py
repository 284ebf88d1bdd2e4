"""Every write with a side effect. Views, admin, API, commands and webhooks call these."""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from .models import Blast, BlastRecipient, Heartbeat, OptOut, StatusHistory, WebhookEvent
from .recipients import ParsedRecipients, normalize_phone, parse_recipients
from .statuses import ACTIVE, BLAST_MOVES, OPEN, STAGE_TIME_FIELDS, can_move
from .templatetags.blasts_extras import duration
from .text import fit

Status = BlastRecipient.Status
Source = StatusHistory.Source


def recipient_advance(
    *,
    recipient: BlastRecipient | int,
    status: Status,
    source: Source,
    occurred_at: datetime | None = None,
    raw: Any = None,
    reason: str = "",
    actor=None,
    held_by: str | None = None,
    lease_ended_before: datetime | None = None,
    also: dict | None = None,
) -> bool:
    """Apply `status` to the recipient if the forward-only rule allows it; return whether it did.

    The only function that changes a recipient's status. Under the row's lock it reads the
    status, writes the new one, sets the first-reached time of the new stage and of every
    earlier stage still without one, and appends exactly one StatusHistory row.
    `reason` explains a FAILED, UNKNOWN or SKIPPED status and is kept on the recipient.
    `held_by`: only while that sender holds its claim on the row and the blast is active.
    `lease_ended_before`: only a send whose lease ran out before then (its sender stopped).
    `also` sets other columns to plain values in the same write (e.g. the message id with PENDING).
    """
    pk = recipient.pk if isinstance(recipient, BlastRecipient) else recipient
    now = timezone.now()
    changes: dict[str, Any] = {**(also or {}), "status": status, "status_changed_at": now}
    if reason:
        changes["failure_reason"] = reason
    firsts = [field for stage, field in STAGE_TIME_FIELDS if stage <= status]
    firsts += ["failed_at"] if status == Status.FAILED else []
    where, where_params = ["id = %s"], [pk]
    if held_by is not None:
        where.append(HELD_BY)
        where_params += [held_by, *ACTIVE]
    if lease_ended_before is not None:
        where.append(LEASE_ENDED)
        where_params += [Status.SENDING, _prepared("claimed_until", lease_ended_before)]
    assign, assign_params = [], []
    for name, value in changes.items():
        if hasattr(value, "resolve_expression"):
            raise TypeError(f"recipient_advance sets plain values, not {name}={value!r}")
        assign.append(f"{connection.ops.quote_name(BlastRecipient._meta.get_field(name).column)} = %s")
        assign_params.append(_prepared(name, value))
    for name in firsts:  # only where not reached before
        assign.append(f"{name} = COALESCE({name}, %s)")
        assign_params.append(_prepared(name, occurred_at or now))
    history = StatusHistory(
        recipient_id=pk,
        to_status=status,
        source=source,
        occurred_at=occurred_at,
        recorded_at=now,
        actor=actor,
        raw=raw,
    )
    movable = [current for current in Status if can_move(current, status)]
    write = _advance_in_one_statement if connection.vendor == "postgresql" else _advance_under_lock
    found, moved = write(
        pk, (" AND ".join(where), where_params), (", ".join(assign), assign_params), movable, history
    )
    if not found and not (len(where) > 1 and BlastRecipient.objects.filter(pk=pk).exists()):
        raise BlastRecipient.DoesNotExist(f"recipient {pk} does not exist")
    if moved and isinstance(recipient, BlastRecipient):
        recipient.refresh_from_db(fields=[*changes, *firsts])
    return moved


# The conditions a caller may put on an advance (recipient_advance's held_by and lease_ended_before).
HELD_BY = (
    "claimed_by = %s AND blast_id IN "
    f"(SELECT id FROM blasts_blast WHERE state IN ({', '.join(['%s'] * len(ACTIVE))}))"
)
LEASE_ENDED = "status = %s AND claimed_until < %s"

# recipient_advance's write on PostgreSQL as one statement, so one round trip: `old` locks and reads
# the row if the conditions hold, `moved` updates it if the rule allows, `logged` appends the history.
ADVANCE_SQL = """
    WITH old AS (SELECT status FROM blasts_blastrecipient WHERE {where} FOR UPDATE),
    moved AS (
        UPDATE blasts_blastrecipient SET {assign}
        WHERE id = %s AND (SELECT status FROM old) = ANY(%s) RETURNING 1
    ),
    logged AS (
        INSERT INTO blasts_statushistory (from_status, {logged}) SELECT (SELECT status FROM old), {values} FROM moved
    )
    SELECT EXISTS (SELECT 1 FROM old), EXISTS (SELECT 1 FROM moved)"""


def _prepared(name: str, value: Any) -> Any:
    """A recipient column's value as the database takes it (aware times, JSON, choices)."""
    return BlastRecipient._meta.get_field(name).get_db_prep_save(value, connection)


def _advance_under_lock(pk, where, assign, movable, history) -> tuple[bool, bool]:
    """The write in a transaction (SQLite's are IMMEDIATE: locked from the start). (found, moved)"""
    (where, where_params), (assign, assign_params) = where, assign
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT status FROM blasts_blastrecipient WHERE {where}", where_params)
        row = cursor.fetchone()
        if row is None or row[0] not in movable:
            return row is not None, False
        cursor.execute(f"UPDATE blasts_blastrecipient SET {assign} WHERE id = %s", [*assign_params, pk])
        history.from_status = row[0]
        history.save(force_insert=True)
    return True, True


def _advance_in_one_statement(pk, where, assign, movable, history) -> tuple[bool, bool]:
    """The same write as ADVANCE_SQL: one PostgreSQL statement. (found, moved)"""
    (where, where_params), (assign, assign_params) = where, assign
    logged = [
        field for field in StatusHistory._meta.concrete_fields if field.name not in ("id", "from_status")
    ]
    values = [field.get_db_prep_save(field.value_from_object(history), connection) for field in logged]
    sql = ADVANCE_SQL.format(
        where=where,
        assign=assign,
        logged=", ".join(field.column for field in logged),
        values=", ".join(["%s"] * len(values)),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*where_params, *assign_params, pk, movable, *values])
        return cursor.fetchone()


@dataclass(frozen=True)
class BlastCreated:
    blast: Blast
    created: int
    duplicates: int
    opted_out: int  # created as SKIPPED: the number is on the opt-out list
    canaries: int = 0  # the team's phones added (CANARY_PHONES), not counted in `created`


CANARY_NAME = "Team canary"


def with_canaries(audience: list) -> list[BlastRecipient]:
    """The audience as unsaved rows, with the team's canary phones spread over the first, middle and
    last positions (one canary: first; two: first and last). A canary phone in the audience stays a canary."""
    canaries = list(dict.fromkeys(normalize_phone(raw) for raw in settings.CANARY_PHONES))
    rows = [BlastRecipient(phone=r.phone, name=r.name) for r in audience if r.phone not in canaries]
    last = len(rows) + len(canaries) - 1
    for index, phone in enumerate(canaries):
        position = round(index * last / (len(canaries) - 1)) if len(canaries) > 1 else 0
        rows.insert(position, BlastRecipient(phone=phone, name=CANARY_NAME, is_canary=True))
    return rows


def blast_create(
    *,
    tag: str,
    message: str,
    recipients: ParsedRecipients,
    device: str,
    follow_up_stage: str = "Initial",
    scheduled_at: datetime | None = None,
    parent: Blast | None = None,
    created_by=None,
) -> BlastCreated:
    """Create a draft blast with its recipients, or raise ValidationError and create nothing.

    Recipients start QUEUED; numbers on the opt-out list start SKIPPED, with the reason.
    """
    if recipients.errors:
        raise ValidationError({"recipients": recipients.errors})
    blast = Blast(
        tag=tag.strip(),
        follow_up_stage=follow_up_stage.strip(),
        message=message,
        device=device.strip(),
        scheduled_at=scheduled_at,
        parent=parent,
        created_by=created_by,
    )
    blast.full_clean()
    with transaction.atomic():
        blast.save()
        rows = with_canaries(recipients.recipients)
        for row in rows:
            row.blast = blast
        BlastRecipient.objects.bulk_create(
            rows, batch_size=1000
        )  # in send order: canaries first, middle, last
        opted_out = blast.recipients.filter(phone__in=OptOut.objects.values("phone")).values_list(
            "pk", flat=True
        )
        skipped = sum(
            recipient_advance(recipient=pk, status=Status.SKIPPED, source=Source.SEND, reason="Opted out")
            for pk in list(opted_out)
        )
    canaries = sum(row.is_canary for row in rows)
    return BlastCreated(blast, len(rows) - canaries, recipients.duplicates, skipped, canaries)


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


def blast_move(*, blast: Blast, to: Blast.State, allowed_from, verb: str, reason: str = "", **fields) -> None:
    """The only writer of Blast.state: one conditional UPDATE from one of `allowed_from` to `to`.

    Each move must be one statuses.BLAST_MOVES allows. When the blast is in none of `allowed_from`
    (now, not when it was read) nothing changes and BlastStateError says so, e.g. "Only a paused
    blast can be resumed; this one is draft."
    """
    if any(to not in BLAST_MOVES[state] for state in allowed_from):
        raise ValueError(f"no blast moves from {allowed_from} to {to}")
    changes = {"state": to, "state_reason": fit(Blast, "state_reason", reason), **fields}
    if Blast.objects.filter(pk=blast.pk, state__in=allowed_from).update(**changes):
        for name, value in changes.items():  # plain values: the row now holds exactly these
            setattr(blast, name, value)
        return
    blast.refresh_from_db()  # to say what it is now
    raise BlastStateError(
        f"Only a {_states_words(allowed_from)} blast can be {verb}; "
        f"this one is {blast.get_state_display().lower()}."
    )


def blast_queue(*, blast: Blast) -> None:
    """Hand a draft blast to the senders; they send it at its scheduled time, or now."""
    if not blast.recipients.filter(is_canary=False).exists():
        raise ValidationError("The blast has no recipients.")
    blast_move(blast=blast, to=Blast.State.QUEUED, allowed_from=[Blast.State.DRAFT], verb="sent")


def blast_start(*, blast: Blast) -> None:
    """A sender's first send of a queued blast (again after a resume): started_at is when this run began,
    and the delivery-health breaker judges only the sends made since."""
    blast_move(
        blast=blast, to=Blast.State.SENDING, allowed_from=[Blast.State.QUEUED], verb="started",
        started_at=timezone.now(),
    )  # fmt: skip


def blast_pause(*, blast: Blast, reason: str = "Paused by a person.") -> None:
    """Stop sending after the message in flight; resume picks up where it stopped."""
    blast_move(blast=blast, to=Blast.State.PAUSED, allowed_from=ACTIVE, verb="paused", reason=reason)


def blast_resume(*, blast: Blast) -> None:
    """Send the rest. Only queued recipients are ever sent, so nothing goes out twice."""
    fields = {"failure_streak": 0, "failure_kind": ""}
    if blast.scheduled_at and blast.scheduled_at < timezone.now():
        fields["scheduled_at"] = None  # a person confirmed a late scheduled blast: send now
    blast_move(
        blast=blast, to=Blast.State.QUEUED, allowed_from=[Blast.State.PAUSED], verb="resumed", **fields
    )


def blast_cancel(*, blast: Blast, reason: str = "Cancelled by a person.") -> None:
    """Stop for good: recipients not sent yet stay unsent."""
    blast_move(
        blast=blast, to=Blast.State.CANCELLED, allowed_from=OPEN, verb="cancelled", reason=reason,
        finished_at=timezone.now(),
    )  # fmt: skip


def blast_complete(*, blast: Blast, now: datetime | None = None) -> None:
    """Nothing is left to send (queued or in flight): the blast is done."""
    blast_move(
        blast=blast,
        to=Blast.State.COMPLETED,
        allowed_from=ACTIVE,
        verb="completed",
        finished_at=now or timezone.now(),
    )


def blast_resend_unknown(*, blast: Blast, actor=None) -> int:
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
            actor=actor,
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
            finished_at=None,
        )
    return queued


def next_follow_up_stage(stage: str) -> str:
    """'Initial' -> 'Follow-up 1' -> 'Follow-up 2' ...; anything else gets ' follow-up' added."""
    match = re.fullmatch(r"Follow-up (\d+)", stage.strip())
    if match:
        return f"Follow-up {int(match.group(1)) + 1}"
    return "Follow-up 1" if stage.strip().lower() == "initial" else f"{stage.strip()} follow-up"[:50]


MAX_AGE_HOURS = 24 * 90  # the oldest "standing there for at least" a follow-up may ask for


def follow_up_audience(parent: Blast, status: Status, min_age: timedelta = timedelta(0)):
    """One funnel cell of the parent: its recipients now at `status`, standing there for at least `min_age`."""
    audience = parent.recipients.filter(status=status, is_canary=False)
    if min_age:
        audience = audience.filter(status_changed_at__lte=timezone.now() - min_age)
    return audience


def blast_create_follow_up(
    *, parent: Blast, status: Status, message: str, min_age: timedelta = timedelta(0), created_by=None
) -> Blast:
    """A draft follow-up to one funnel cell of the parent (see follow_up_audience), on the next stage."""
    audience = follow_up_audience(parent, status, min_age)
    rows = [
        (f"Recipient {pk}", phone, name) for pk, phone, name in audience.values_list("pk", "phone", "name")
    ]
    if not rows:
        at = (
            f"has been at {status.label.lower()} for {duration(min_age)} or more"
            if min_age
            else f"is at {status.label.lower()} now"
        )
        raise ValidationError(f"No recipient of this blast {at}.")
    return blast_create(
        tag=parent.tag,
        follow_up_stage=next_follow_up_stage(parent.follow_up_stage),
        message=message,
        recipients=parse_recipients(rows),
        device=parent.device,
        parent=parent,
        created_by=created_by,
    ).blast


def worker_heartbeat(*, role: str, name: str, note: str = "") -> None:
    """Record that a worker is alive (and what it did last); staff see it on the status page."""
    now = timezone.now()
    Heartbeat.objects.update_or_create(
        name=name[:100],
        defaults={"role": role, "seen_at": now, "note": note[:200]},
        create_defaults={"role": role, "seen_at": now, "started_at": now, "note": note[:200]},
    )


def records_prune(*, older_than: timedelta, batch: int = 5000) -> dict[str, int]:
    """Delete raw webhook events and status history older than `older_than`; return how many of each.

    Funnel counts never change: they are read from each recipient's current status and stage times,
    not from history. Events still waiting for their send are kept, whatever their age.
    """
    cutoff = timezone.now() - older_than
    old = {
        "webhook events": WebhookEvent.objects.filter(received_at__lt=cutoff).exclude(
            state=WebhookEvent.State.WAITING
        ),
        "history rows": StatusHistory.objects.filter(recorded_at__lt=cutoff),
    }
    deleted = dict.fromkeys(old, 0)
    for name, rows in old.items():
        while ids := list(rows.values_list("pk", flat=True)[:batch]):  # short transactions, bounded memory
            deleted[name] += rows.model.objects.filter(pk__in=ids).delete()[0]
    return deleted
