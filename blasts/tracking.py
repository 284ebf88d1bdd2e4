"""Status tracking: webhook events and status polls applied through the status ledger; replies and opt-outs.

Statuses come from two imperfect sources. Webhooks arrive twice, out of order, before our own
send has stored the message id, or not at all; polling getMessageStatus sometimes answers
"unknown". Both go through recipient_advance, which never moves a status backwards and logs
each applied change once, so replaying or racing them changes nothing twice.
"""

import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from blastsite.logs import log_event

from .models import Blast, BlastRecipient, OptOut, StatusHistory, WebhookEvent
from .services import recipient_advance
from .statuses import status_from_gateway
from .wsapme import WsapmeClient, WsapmeError

log = logging.getLogger(__name__)
Status = BlastRecipient.Status
Source = StatusHistory.Source
State = WebhookEvent.State

# Not final: a later status may still come. Read (and anything after it) and FAILED are final.
NOT_FINAL = (Status.PENDING, Status.SERVER_ACK, Status.DELIVERY_ACK)
# When to ask getMessageStatus again, counted from the send; after the last step we stop.
POLL_LADDER = tuple(timedelta(minutes=minutes) for minutes in (2, 10, 30, 2 * 60, 6 * 60, 24 * 60, 72 * 60))
WAITING_KEPT = timedelta(days=3)  # early acks are retried this long for their message id


@dataclass(frozen=True)
class StatusEvent:
    """An ack for a message we sent."""

    message_id: str
    status: Status | None  # None: a value we do not know (kept, changes nothing)
    raw_status: Any
    phone: str  # E.164 from the JID, when the shape has one
    occurred_at: datetime | None


@dataclass(frozen=True)
class ReplyEvent:
    """A message a recipient wrote to us."""

    phone: str
    text: str
    occurred_at: datetime | None


def poll_after(sent_at: datetime, polls: int) -> datetime | None:
    """When to poll a message next, after `polls` polls; None once the ladder is done."""
    return sent_at + POLL_LADDER[polls] if polls < len(POLL_LADDER) else None


# --- webhooks -------------------------------------------------------------------------------------


def webhook_event_receive(body: Any, event: StatusEvent | ReplyEvent | None) -> WebhookEvent:
    """Store one callback raw and apply it; the stored row and its effect commit together.

    If applying fails for any reason but the database, the raw body is still stored for review.
    A database failure raises, so the webhook answers 503 and WSAPME sends it again.
    """
    record = WebhookEvent(body=body, kind=WebhookEvent.Kind.UNKNOWN, state=State.REVIEW)
    if isinstance(event, StatusEvent):
        record.kind, record.message_id, record.status = (
            WebhookEvent.Kind.STATUS,
            event.message_id,
            str(event.raw_status)[:20],
        )
        record.phone, record.occurred_at = event.phone, event.occurred_at
    elif isinstance(event, ReplyEvent):
        record.kind, record.phone, record.occurred_at = (
            WebhookEvent.Kind.REPLY,
            event.phone,
            event.occurred_at,
        )
    try:
        with transaction.atomic():
            _apply(record, event)
            record.save()
    except DatabaseError:
        raise
    except Exception:
        log.exception("webhook event could not be applied; stored for review")
        record.pk, record.state, record.note = None, State.REVIEW, "Could not be applied: see the server log."
        record.save()
    if record.state == State.WAITING and BlastRecipient.objects.filter(message_id=record.message_id).exists():
        webhook_events_apply_waiting(message_ids=[record.message_id])  # the send stored the id meanwhile
        record.refresh_from_db()
    log_event(
        log,
        "webhook",
        kind=record.kind,
        state=record.state,
        blast=record.recipient.blast_id if record.recipient else None,
        recipient=record.recipient_id,
        message=record.message_id or None,
    )
    return record


def _apply(record: WebhookEvent, event: StatusEvent | ReplyEvent | None) -> None:
    if event is None:
        record.state, record.note = State.REVIEW, "Shape not understood."
    elif isinstance(event, ReplyEvent):
        _apply_reply(record, event)
    else:
        _apply_status(record, event)


def _apply_status(record: WebhookEvent, event: StatusEvent) -> None:
    if event.status is None:
        # repr() may grow the text (escapes), and the note column holds 255 characters.
        record.state, record.note = State.IGNORED, f"Unknown status {str(event.raw_status)[:40]!r}."[:255]
        return
    recipient = _recipient_by_message_id(event.message_id)
    adopt = {}
    if recipient is None:
        recipient = _unknown_send_for(event)
        if recipient is None:
            record.state = State.WAITING  # the send may not have stored this id yet
            return
        adopt = {"message_id": event.message_id}
        record.note = "Matched to a send whose outcome was unknown; its message id is adopted."
    record.recipient = recipient
    applied = recipient_advance(
        recipient=recipient.pk,
        status=event.status,
        source=Source.WEBHOOK,
        occurred_at=event.occurred_at,
        raw=record.body,
        reason="WhatsApp reported an error (ERROR)" if event.status == Status.FAILED else "",
        require={"message_id__isnull": True} if adopt else None,
        also=adopt,
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


def _unknown_send_for(event: StatusEvent) -> BlastRecipient | None:
    """The one UNKNOWN send to the event's number around its time, if exactly one."""
    if not event.phone:
        return None
    when = event.occurred_at or timezone.now()
    window = timedelta(minutes=settings.UNKNOWN_MATCH_MINUTES)
    candidates = list(
        BlastRecipient.objects.filter(
            phone=event.phone,
            status=Status.UNKNOWN,
            message_id__isnull=True,
            status_changed_at__range=(when - window, when + window),
        ).only("pk", "blast_id")[:2]
    )
    return candidates[0] if len(candidates) == 1 else None


def _is_opt_out(text: str) -> bool:
    words = " ".join(re.sub(r"[^\w\s]", " ", text).split()).upper()
    return words in {word.strip().upper() for word in settings.OPT_OUT_WORDS}


def _apply_reply(record: WebhookEvent, event: ReplyEvent) -> None:
    if _is_opt_out(event.text):
        OptOut.objects.get_or_create(phone=event.phone, defaults={"reason": f"Replied {event.text[:40]!r}"})
        record.note = "The number opted out."
    now = timezone.now()
    when = min(event.occurred_at or now, now)
    since = when - timedelta(hours=settings.REPLY_ATTRIBUTION_HOURS)
    recipient = (
        BlastRecipient.objects.filter(phone=event.phone)
        .filter(
            Q(sent_at__range=(since, now)) | Q(status=Status.UNKNOWN, status_changed_at__range=(since, now))
        )
        .order_by(Coalesce("sent_at", "status_changed_at").desc())
        .only("pk", "reply_text", "blast_id")
        .first()
    )
    if recipient is None:
        record.state = State.UNATTRIBUTED
        return
    record.recipient = recipient
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


def webhook_events_apply_waiting(*, message_ids: list[str] | None = None) -> int:
    """Apply acks that arrived before their message id was stored (of these ids, or all); return how many found their message."""
    waiting = WebhookEvent.objects.filter(state=State.WAITING, received_at__gte=timezone.now() - WAITING_KEPT)
    if message_ids is not None:
        waiting = waiting.filter(message_id__in=message_ids)
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
            status = status_from_gateway(record.status)
            _apply_status(
                record,
                StatusEvent(record.message_id, status, record.status, record.phone, record.occurred_at),
            )
            record.save()
            found += record.state != State.WAITING
    return found


# --- polling --------------------------------------------------------------------------------------


class _DeviceLimiter:
    """At most `rate` status checks per second per device, shared by this run's threads."""

    def __init__(self, rate: float):
        self.rate, self.lock, self.next_at = rate, threading.Lock(), {}

    def wait(self, device: str) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next_at.get(device, now))
            self.next_at[device] = at + 1 / self.rate
        time.sleep(at - now)

    def hold(self, device: str, seconds: float) -> None:
        with self.lock:
            self.next_at[device] = max(self.next_at.get(device, 0), time.monotonic() + seconds)


def recipients_claim_for_poll(*, now: datetime, limit: int) -> list[tuple[int, str, str, int]]:
    """Take due messages and move each to its next rung at once, so overlapping runs never poll one twice."""
    with transaction.atomic():
        rows = list(
            BlastRecipient.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status__in=NOT_FINAL, message_id__isnull=False, next_poll_at__lte=now)
            .order_by("next_poll_at")
            .values_list("pk", "message_id", "blast__device", "blast_id", "polls", "sent_at")[:limit]
        )
        moved = [
            BlastRecipient(pk=pk, polls=polls + 1, next_poll_at=poll_after(sent_at or now, polls + 1))
            for pk, _, _, _, polls, sent_at in rows
        ]
        BlastRecipient.objects.bulk_update(moved, ["polls", "next_poll_at"])
    return [row[:4] for row in rows]


def poll_one(
    client: WsapmeClient,
    limiter: _DeviceLimiter,
    pk: int,
    message_id: str,
    device: str,
    blast_id: int | None = None,
) -> str:
    """Ask the gateway for one message's status and apply it; return 'updated', 'unchanged', 'unknown' or 'error'."""
    limiter.wait(device)
    try:
        result = client.message_status(device=device, message_id=message_id)
    except WsapmeError as exc:
        if exc.retry_after:
            limiter.hold(device, exc.retry_after)
        log_event(
            log,
            "poll",
            logging.WARNING,
            blast=blast_id,
            recipient=pk,
            message=message_id,
            outcome="error",
            error=exc,
        )
        return "error"
    status = status_from_gateway(result.status) if result.known else None
    if status is None:  # {"success": false, "data": {}} means "unknown right now", not a failure
        return "unknown"
    applied = recipient_advance(
        recipient=pk,
        status=status,
        source=Source.POLL,
        # The observed messageC2STimestamp is the delivery time; other statuses get ours.
        occurred_at=result.occurred_at if status == Status.DELIVERY_ACK else None,
        raw=result.raw,
        reason="WhatsApp reported an error (ERROR)" if status == Status.FAILED else "",
    )
    log_event(
        log, "poll", blast=blast_id, recipient=pk, message=message_id, status=status.name, applied=applied
    )
    return "updated" if applied else "unchanged"


def poll_due(*, client: WsapmeClient, blast_id: int | None = None, concurrency: int | None = None) -> Counter:
    """Poll every due message (or every unfinished one of `blast_id`, now) with a few threads."""
    limiter = _DeviceLimiter(settings.POLL_RATE_PER_SECOND)
    tally: Counter = Counter()
    lock = threading.Lock()
    if blast_id:
        Blast.objects.get(pk=blast_id)  # DoesNotExist for a wrong id
        todo = list(
            BlastRecipient.objects.filter(blast_id=blast_id, status__in=NOT_FINAL, message_id__isnull=False)
            .order_by("id")
            .values_list("pk", "message_id", "blast__device")
        )

        def next_batch():
            with lock:
                batch, todo[:] = todo[:20], todo[20:]
            return batch
    else:

        def next_batch():
            return recipients_claim_for_poll(now=timezone.now(), limit=20)

    def work():
        while batch := next_batch():
            for row in batch:
                outcome = poll_one(client, limiter, *row)
                with lock:
                    tally[outcome] += 1

    def work_in_thread():
        try:
            work()
        finally:
            connection.close()  # each thread has its own connection

    count = max(concurrency or settings.POLL_CONCURRENCY, 1)
    if count == 1:
        work()  # in this thread (and its transaction, if any)
        return tally
    threads = [threading.Thread(target=work_in_thread) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally
