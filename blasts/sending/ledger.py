"""The send ledger: claims, and what each send's outcome does to its recipient. Per recipient:
1. claim: a short transaction takes due QUEUED rows with SELECT ... FOR UPDATE SKIP LOCKED and
   marks them claimed by this worker until a lease runs out (an expired claim is free again);
2. SENDING is committed (through the status ledger) before the HTTP call, and only by the
   worker that still holds the claim;
3. the outcome is committed right after the call: PENDING with the message id, FAILED, back to
   QUEUED (the gateway certainly did not take it), or UNKNOWN (it may have: never resent
   automatically). A SENDING row whose lease ran out belonged to a worker that died mid-send:
   it becomes UNKNOWN.
No transaction is open during an HTTP call (the worker's loop is worker.py).
"""

import os
import random
import socket
import threading
from contextlib import suppress
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, Min, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..gateway.client import Outcome, SendResult
from ..lifecycle import BlastStateError, blast_complete, blast_pause
from ..models import Blast, BlastRecipient, StatusHistory
from ..services import recipient_advance
from ..statuses import ACTIVE
from ..tracking.events import webhook_events_apply_waiting
from ..tracking.polling import poll_after
from .breaker import blast_count_send
from .pacing import device_block

Status = BlastRecipient.Status
Source = StatusHistory.Source


UNCLAIM = {"claimed_by": "", "claimed_until": None}


class Done(StrEnum):
    """What became of one claimed recipient in a sender's run: the keys of its tally."""

    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"  # may have gone out: never resent by itself
    REQUEUED = "requeued"  # certainly not sent: back to the queue, after a backoff
    SKIPPED = "skipped"  # opted out, or no longer in a follow-up's audience
    LOST = "lost"  # the claim expired and another sender took it
    RELEASED = "released"  # given back: the blast stopped being active
    WAITING = "waiting"  # given back: the device's next slot is too far off


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:"


def worker_name() -> str:
    return f"{process_name()}{threading.get_ident() % 100000}"


def _due_blasts(now: datetime, blast_id: int | None):
    due = Blast.objects.filter(state__in=ACTIVE).filter(
        Q(scheduled_at__isnull=True) | Q(scheduled_at__lte=now)
    )
    return due.filter(pk=blast_id) if blast_id else due


def recipients_claim(
    *, worker: str, limit: int, now: datetime, blast_id: int | None = None, skip_devices=()
) -> list[int]:
    """Claim up to `limit` due recipients for `worker`, oldest blast first; other workers skip them."""
    if connection.vendor == "postgresql":
        sql, params = claim_statement(
            worker=worker,
            limit=limit,
            now=now,
            blast_id=blast_id,
            skip_devices=skip_devices,
            returning="blast_id, id",
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [pk for _, pk in sorted(cursor.fetchall())]  # RETURNING keeps no order
    lease = timedelta(seconds=settings.SEND_LEASE_SECONDS)
    due = _due_blasts(now, blast_id).exclude(device__in=list(skip_devices)).values("pk")
    with transaction.atomic():
        ids = list(
            BlastRecipient.objects.select_for_update(skip_locked=True)
            .filter(status=Status.QUEUED, blast__in=due)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .order_by("blast_id", "id")
            .values_list("pk", flat=True)[:limit]
        )
        BlastRecipient.objects.filter(pk__in=ids).update(claimed_by=worker, claimed_until=now + lease)
    return ids


# recipients_claim on PostgreSQL: the same rows, taken and marked in one statement (one round trip, no
# BEGIN/COMMIT); its inner SELECT walks the recipient_queued_order index like the ORM's did.
CLAIM_SQL = """
    UPDATE blasts_blastrecipient SET claimed_by = %s, claimed_until = %s
    WHERE id IN (
        SELECT id FROM blasts_blastrecipient
        WHERE status = %s
          AND blast_id IN (
            SELECT id FROM blasts_blast
            WHERE state IN ({states}) AND (scheduled_at IS NULL OR scheduled_at <= %s){blast}{devices}
          )
          AND (claimed_until IS NULL OR claimed_until < %s)
          AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
        ORDER BY blast_id, id
        LIMIT %s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING {returning}"""


def claim_statement(
    *, worker: str, limit: int, now: datetime, blast_id: int | None, skip_devices, returning: str
) -> tuple[str, list]:
    """recipients_claim's statement on PostgreSQL with its parameters, RETURNING `returning` of the
    claimed rows: for the sender, which reads what it sends first in the same statement (worker.py)."""
    skip_devices = list(skip_devices)
    sql = CLAIM_SQL.format(
        states=", ".join(["%s"] * len(ACTIVE)),
        blast=" AND id = %s" if blast_id else "",
        devices=f" AND device NOT IN ({', '.join(['%s'] * len(skip_devices))})" if skip_devices else "",
        returning=returning,
    )
    until = now + timedelta(seconds=settings.SEND_LEASE_SECONDS)
    params = [worker, until, Status.QUEUED, *ACTIVE, now, *([blast_id] if blast_id else []), *skip_devices]
    return sql, [*params, now, now, limit]


def recipients_release(ids, *, worker: str) -> None:
    """Give back claims this worker will not use (never touches a recipient it already sent)."""
    BlastRecipient.objects.filter(pk__in=list(ids), claimed_by=worker, status=Status.QUEUED).update(**UNCLAIM)


def recipients_reap_lost_sends(*, now: datetime) -> int:
    """SENDING rows whose lease ran out: their worker died during the send, so the outcome is unknown.

    Replies that came from those numbers during the send were waiting for it to end: they count now.
    """
    lost = BlastRecipient.objects.filter(status=Status.SENDING, claimed_until__lt=now).values_list(
        "pk", flat=True
    )
    reaped = [
        pk
        for pk in list(lost)
        if recipient_advance(
            recipient=pk,
            status=Status.UNKNOWN,
            source=Source.INFERRED,
            reason="The sender stopped during this send: it may or may not have gone out.",
            lease_ended_before=now,
            also=UNCLAIM,
        )
    ]
    if reaped:
        webhook_events_apply_waiting(recipient_ids=reaped)
    return len(reaped)


def blasts_hold_stale(*, now: datetime) -> int:
    """A scheduled blast far past its time (after an outage) is not sent silently: it waits for a person."""
    cutoff = now - timedelta(hours=settings.BLAST_STALE_AFTER_HOURS)
    stale = Blast.objects.filter(state=Blast.State.QUEUED, started_at__isnull=True, scheduled_at__lt=cutoff)
    for blast in stale:
        when = timezone.localtime(blast.scheduled_at).strftime("%Y-%m-%d %H:%M")
        with suppress(BlastStateError):  # a person paused or cancelled it meanwhile
            blast_pause(blast=blast, reason=f"It was scheduled for {when}, long past: resume it to send now.")
    return len(stale)


def blasts_complete_finished(*, now: datetime, blast_id: int | None = None) -> int:
    """Blasts with no recipient left to send (queued or in flight) are completed."""
    open_recipients = BlastRecipient.objects.filter(
        blast=OuterRef("pk"), status__in=[Status.QUEUED, Status.SENDING]
    )
    blasts = (
        Blast.objects.filter(state__in=ACTIVE).exclude(scheduled_at__gt=now).filter(~Exists(open_recipients))
    )
    if blast_id:
        blasts = blasts.filter(pk=blast_id)
    completed = 0
    for blast in blasts:
        with suppress(BlastStateError):  # another sender completed it, or a person paused it, meanwhile
            blast_complete(blast=blast, now=now)
            completed += 1
    return completed


def next_due_at(*, now: datetime, blast_id: int | None = None) -> datetime | None:
    """When a recipient of a due blast can next be claimed by this process (None: nothing left to send).

    Live claims of this process's other senders are theirs to finish: they send or requeue them
    themselves, so a sender with nothing left to claim need not wait for them.
    """
    due = _due_blasts(now, blast_id).values("pk")
    pending = BlastRecipient.objects.filter(status__in=[Status.QUEUED, Status.SENDING], blast__in=due)
    pending = pending.exclude(claimed_by__startswith=process_name(), claimed_until__gte=now)
    return pending.aggregate(at=Min(Coalesce("next_attempt_at", "claimed_until", Value(now))))["at"]


def _backoff(attempts: int, retry_after: float | None, rng: random.Random) -> float:
    """Capped exponential backoff with jitter, never sooner than the gateway's Retry-After."""
    delay = min(settings.SEND_BACKOFF_CAP_SECONDS, 2.0**attempts) * rng.uniform(0.5, 1.5)
    return max(delay, retry_after or 0.0)


def _record(recipient: BlastRecipient, blast: Blast, result: SendResult, rng: random.Random) -> Done:
    """Commit what the gateway said about one send; return what became of the recipient."""
    now = timezone.now()
    common = {"recipient": recipient.pk, "source": Source.SEND, "raw": result.raw}
    if result.outcome == Outcome.SENT:
        also = {
            **UNCLAIM,
            "message_id": result.message_id,
            "send_response": result.raw,
            "failure_reason": "",
            "next_poll_at": poll_after(now, 0),
        }
        recipient_advance(status=Status.PENDING, also=also, **common)
        outcome = Done.SENT
    elif result.outcome == Outcome.REJECTED:
        recipient_advance(status=Status.FAILED, reason=result.reason, also=UNCLAIM, **common)
        outcome = Done.FAILED
    elif result.outcome == Outcome.UNKNOWN:
        recipient_advance(status=Status.UNKNOWN, reason=result.reason, also=UNCLAIM, **common)
        outcome = Done.UNKNOWN
    else:  # BLOCKED or NOT_SENT: the gateway certainly did not take it
        if result.retry_after:
            device_block(blast.device, until=now + timedelta(seconds=result.retry_after))
        attempts = recipient.attempts + 1
        if result.outcome == Outcome.NOT_SENT and attempts >= settings.SEND_MAX_ATTEMPTS:
            reason = f"Gave up after {attempts} attempts: {result.reason}"
            recipient_advance(status=Status.FAILED, reason=reason, also=UNCLAIM, **common)
            outcome = Done.FAILED
        else:
            retry_at = now + timedelta(seconds=_backoff(attempts, result.retry_after, rng))
            also = {**UNCLAIM, "next_attempt_at": retry_at}
            recipient_advance(status=Status.QUEUED, reason=result.reason, also=also, **common)
            outcome = Done.REQUEUED
    blast_count_send(blast=blast, result=result)
    return outcome
