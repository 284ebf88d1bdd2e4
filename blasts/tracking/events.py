"""Webhook events applied through the status ledger: acks, replies and opt-outs.

Statuses come from two imperfect sources. Webhooks arrive twice, out of order, before our own
send has stored the message id, or not at all; polling getMessageStatus sometimes answers
"unknown". Both go through recipient_advance, which never moves a status backwards and logs
each applied change once, so replaying or racing them changes nothing twice.

An event that cannot be applied yet waits (WebhookEvent.State.WAITING) and is applied the moment
what it waits for happens: an ack for its message id (the send has not stored it yet), a reply
for the end of the send to its number (the sender is inside the HTTP call, or died there).
"""

import logging
import re
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from blastsite.logs import log_event

from ..audit import SYSTEM, Actor, Did, audit_record
from ..bulk import rows_insert
from ..gateway.payloads import ReplyEvent, StatusEvent, parse_event
from ..models import Blast, BlastRecipient, OptOut, StatusHistory, WebhookEvent
from ..opt_outs.services import opt_out_add
from ..services import recipient_advance
from ..statuses import status_from_gateway
from ..text import fit

log = logging.getLogger(__name__)
Status = BlastRecipient.Status
Source = StatusHistory.Source
State = WebhookEvent.State
Kind = WebhookEvent.Kind


WAITING_KEPT = timedelta(days=3)  # waiting events are retried this long
# A reply to a number whose send is open (SENDING) waits for the send's outcome; one whose outcome
# is unknown is proof the message went out, so it counts at once.
OPEN_SEND = (Status.SENDING, Status.UNKNOWN)
ERROR_REASON = "WhatsApp reported an error (ERROR)"


def webhook_events_store(bodies: list[Any]) -> int:
    """Store the callbacks of one request raw, unapplied, for the applier (tracking/applier.py).

    All of them or, on a database failure, none (the webhook answers 503 and WSAPME's resend stores
    nothing twice): on PostgreSQL one INSERT whatever their number, which wakes the appliers (a
    trigger NOTIFYs); on SQLite Django's bulk_create (an INSERT a 90 events, in one transaction).
    """
    rows_insert(WebhookEvent, [WebhookEvent(body=body, state=State.RECEIVED) for body in bodies])
    return len(bodies)


def webhook_event_describe(record: WebhookEvent, event: StatusEvent | ReplyEvent | None) -> None:
    """Fill in what the event's body says (kind, message id, status, number, time) on its record."""
    record.kind, record.note = Kind.UNKNOWN, ""
    if isinstance(event, StatusEvent):
        record.kind, record.message_id = Kind.STATUS, event.message_id
        record.status = fit(WebhookEvent, "status", str(event.raw_status))
        record.phone, record.occurred_at = event.phone, event.occurred_at
    elif isinstance(event, ReplyEvent):
        record.kind, record.phone, record.occurred_at = Kind.REPLY, event.phone, event.occurred_at


def webhook_event_apply(record: WebhookEvent, event: StatusEvent | ReplyEvent | None) -> None:
    """Apply one described event through the ledger; its record (unsaved) says what became of it."""
    if event is None:
        record.state, record.note = State.REVIEW, "Shape not understood."
    elif isinstance(event, ReplyEvent):
        _apply_reply(record, event)
    else:
        _apply_status(record, event)


def _apply_status(record: WebhookEvent, event: StatusEvent) -> None:
    if event.status is None:
        record.state = State.IGNORED
        record.note = fit(WebhookEvent, "note", f"Unknown status {str(event.raw_status)[:40]!r}.")
        return
    recipient = _recipient_by_message_id(event.message_id)
    if recipient is None:
        recipient = _unknown_send_for(event)
        if recipient is None:
            record.state = State.WAITING  # the send may not have stored this id yet
            return
        if not recipient_adopt_message_id(recipient=recipient, message_id=event.message_id):
            record.state = State.WAITING  # another ack took that send meanwhile: try again later
            return
        record.note = "Matched to a send whose outcome was unknown; its message id is adopted."
    record.recipient = recipient
    applied = recipient_advance(
        recipient=recipient.pk,
        status=event.status,
        source=Source.WEBHOOK,
        occurred_at=event.occurred_at,
        raw=record.body,
        reason=ERROR_REASON if event.status == Status.FAILED else "",
    )
    record.state = State.APPLIED if applied else State.NO_CHANGE


def _recipient_by_message_id(message_id: str) -> BlastRecipient | None:
    """The recipient sent under `message_id` (unique), with only its pk and blast_id loaded.

    Every ack runs this, so it skips the query compiler: `.filter().only().first()` took 0.3 ms of
    CPU, this 0.09 ms, of the 2.5 ms a webhook event costs a web worker (bench/webhooks.py).
    """
    table = BlastRecipient._meta.db_table
    sql = f"SELECT id, blast_id FROM {table} WHERE message_id = %s"
    return next(iter(BlastRecipient.objects.raw(sql, [message_id])), None)


def _without_message_id(phone: str, when: datetime):
    """Sends to `phone` around `when` whose message id we never learnt.

    Either the outcome is still unknown (within UNKNOWN_MATCH_MINUTES of when it became unknown),
    or a reply proved the message went out (the reply came within the attribution window after it).
    """
    window = timedelta(minutes=settings.UNKNOWN_MATCH_MINUTES)
    replied_within = timedelta(hours=settings.REPLY_ATTRIBUTION_HOURS)
    return BlastRecipient.objects.filter(phone=phone, message_id__isnull=True).filter(
        Q(status=Status.UNKNOWN, status_changed_at__range=(when - window, when + window))
        | Q(status__gte=Status.PENDING, sent_at__range=(when - window, when + replied_within))
    )


def _unknown_send_for(event: StatusEvent) -> BlastRecipient | None:
    """The one send to the event's number around its time without a message id, if exactly one."""
    if not event.phone:
        return None
    candidates = list(
        _without_message_id(event.phone, event.occurred_at or timezone.now()).only("pk", "blast_id")[:2]
    )
    return candidates[0] if len(candidates) == 1 else None


def recipient_adopt_message_id(*, recipient: BlastRecipient, message_id: str) -> bool:
    """Give a send whose message id we never learnt the id an ack names; later acks then find it.

    The reason its outcome was unknown no longer explains its status: the history keeps the UNKNOWN.
    """
    adopted = BlastRecipient.objects.filter(pk=recipient.pk, message_id__isnull=True)
    return bool(adopted.update(message_id=message_id, failure_reason=""))


def _words(text: str) -> list[str]:
    """The text's words, upper case, with compatibility forms folded (full-width letters read as
    ASCII), accents dropped, and punctuation, emoji and spacing of any kind between them ignored."""
    text = "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.category(c).startswith("M")
    )
    return re.sub(r"[\W_]+", " ", text).upper().split()


def _is_opt_out(text: str) -> bool:
    """Whether the reply starts with an opt-out word ("STOP", "Stop 🇲🇾", "opt-out please")."""
    words = _words(text)
    return any(
        words[: len(opt_out)] == opt_out
        for opt_out in (_words(word) for word in settings.OPT_OUT_WORDS)
        if opt_out
    )


def _reply_recipient(event: ReplyEvent) -> BlastRecipient | None:
    """The most recent send to the number within the attribution window: sent, or still open."""
    now = timezone.now()
    when = min(event.occurred_at or now, now)
    since = when - timedelta(hours=settings.REPLY_ATTRIBUTION_HOURS)
    return (
        BlastRecipient.objects.filter(phone=event.phone)
        .filter(
            Q(sent_at__range=(since, now)) | Q(status__in=OPEN_SEND, status_changed_at__range=(since, now))
        )
        .order_by(Coalesce("sent_at", "status_changed_at").desc())
        .only("pk", "status", "blast_id")
        .first()
    )


def _apply_reply(record: WebhookEvent, event: ReplyEvent) -> None:
    record.note = ""
    recipient = _reply_recipient(event)
    if _is_opt_out(event.text):
        reason = fit(OptOut, "reason", f"Replied {event.text[:40]!r}")
        blast = Blast(pk=recipient.blast_id) if recipient else None
        opt_out_add(phone=event.phone, reason=reason, by=SYSTEM, source=OptOut.Source.REPLY, blast=blast,
                    reply_text=event.text)  # fmt: skip
        record.note = "The number opted out."
    record.recipient = recipient
    if recipient is None:
        record.state = State.UNATTRIBUTED
        return
    if recipient.status == Status.SENDING:
        record.state, record.note = State.WAITING, "Waiting for the send to this number to end."
        return
    applied = recipient_advance(
        recipient=recipient.pk,
        status=Status.REPLIED,
        source=Source.WEBHOOK,
        occurred_at=event.occurred_at,
        raw=record.body,
    )
    # Keep the first reply's words, also when the recipient was already marked replied or closed.
    BlastRecipient.objects.filter(pk=recipient.pk, reply_text="").update(reply_text=event.text)
    record.state = State.APPLIED if applied else State.NO_CHANGE


def webhook_events_apply_waiting(
    *, message_ids: list[str] | None = None, recipient_ids: list[int] | None = None, kind: str | None = None
) -> int:
    """Apply waiting events whose wait may be over; return how many were applied.

    Acks wait for their message id (those of `message_ids` that a send has stored by now), replies
    for the end of a send (to one of `recipient_ids`); with neither given, every waiting event (of
    `kind`) is tried, also acks that may now match an unknown send by their number.
    """
    waiting = WebhookEvent.objects.filter(state=State.WAITING, received_at__gte=timezone.now() - WAITING_KEPT)
    if kind:
        waiting = waiting.filter(kind=kind)
    if message_ids is not None or recipient_ids is not None:
        stored = BlastRecipient.objects.filter(message_id__in=message_ids or []).values("message_id")
        waiting = waiting.filter(
            Q(kind=Kind.STATUS, message_id__in=stored)
            | Q(kind=Kind.REPLY, recipient_id__in=recipient_ids or [])
        )
    else:
        # Only acks that can find their send now: by its stored id, or by number (_unknown_send_for).
        # The poller sweeps every few seconds; acks that wait for nothing cost it one statement.
        stored = BlastRecipient.objects.filter(message_id=OuterRef("message_id"))
        without_id = BlastRecipient.objects.filter(phone=OuterRef("phone"), message_id__isnull=True).filter(
            Q(status=Status.UNKNOWN) | Q(status__gte=Status.PENDING)
        )
        waiting = waiting.filter(Q(kind=Kind.REPLY) | Exists(stored) | (~Q(phone="") & Exists(without_id)))
    # A reply waits while its send is open; only try those whose send has ended.
    waiting = waiting.exclude(kind=Kind.REPLY, recipient__status=Status.SENDING)
    found = 0
    for pk in list(waiting.order_by("id").values_list("pk", flat=True)):
        with transaction.atomic():
            record = (
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(pk=pk, state=State.WAITING)
                .first()
            )
            if record is None:
                continue  # another process has it
            if record.kind == Kind.REPLY:
                _apply_reply(record, parse_event(record.body))
            else:
                status = status_from_gateway(record.status)
                event = StatusEvent(
                    record.message_id, status, record.status, record.phone, record.occurred_at
                )
                _apply_status(record, event)
            record.applied_at = timezone.now()
            record.save()
            found += record.state != State.WAITING
    return found


def webhook_events_waiting_sql(message_ids: list[str], recipient_ids: list[int], db) -> tuple[str, list]:
    """An SQL boolean, with its parameters, for another statement to carry: whether an event may be
    waiting for one of these sends (acks for `message_ids`, replies to `recipient_ids`).

    It may say yes for an event webhook_events_apply_waiting then leaves waiting (a reply whose send
    is still open), never no for one it would apply. `db`: the connection that runs it.
    """
    table = WebhookEvent._meta.db_table

    def among(column: str, ids: list) -> tuple[str, list]:
        # An array on PostgreSQL: the same text for any number of ids, so the statement stays prepared.
        if db.vendor == "postgresql":
            return f"{column} = ANY(%s)", [list(ids)]
        return f"{column} IN ({', '.join(['%s'] * len(ids))})", list(ids)

    parts, params = (
        [],
        [
            State.WAITING,
            WebhookEvent._meta.get_field("received_at").get_db_prep_value(timezone.now() - WAITING_KEPT, db),
        ],
    )
    for kind, column, ids in (
        (Kind.STATUS, "w.message_id", message_ids),
        (Kind.REPLY, "w.recipient_id", recipient_ids),
    ):
        if ids:
            where, values = among(column, ids)
            parts.append(f"w.kind = %s AND {where}")
            params += [kind, *values]
    either = " OR ".join(parts) or "FALSE"
    sql = f"EXISTS (SELECT 1 FROM {table} w WHERE w.state = %s AND w.received_at >= %s AND ({either}))"
    return sql, params


def recipient_match_message_id(*, recipient: BlastRecipient, message_id: str, by: Actor) -> int:
    """An operator's match of a send whose message id we never learnt to the id of acks waiting for
    one (flat acks name no number, so no rule can match them); the acks then go through the ledger.
    Returns how many of them were applied; raises ValidationError with a message for people."""
    acks = WebhookEvent.objects.filter(kind=Kind.STATUS, message_id=message_id)
    if recipient.message_id:
        raise ValidationError(f"This send has a message id already ({recipient.message_id}).")
    if not acks.filter(state=State.WAITING).exists():
        raise ValidationError("No ack is waiting with that message id any more.")
    if BlastRecipient.objects.filter(message_id=message_id).exists():
        raise ValidationError("Another send has that message id already.")
    if not recipient_adopt_message_id(recipient=recipient, message_id=message_id):
        raise ValidationError("This send got a message id meanwhile.")
    applied = webhook_events_apply_waiting(message_ids=[message_id])
    acks.filter(recipient=recipient).update(note=fit(WebhookEvent, "note", f"Matched by hand by {by}."))
    audit_record(
        by, Did.MATCHED, blast=recipient.blast, about=recipient, message_id=message_id, applied=applied
    )
    log_event(log, "match", blast=recipient.blast_id, recipient=recipient.pk, message=message_id, actor=by)
    return applied
