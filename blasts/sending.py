"""Sending: workers claim due recipients, pace them per device, and send each once or say why not.

The send ledger, per recipient:
1. claim: a short transaction takes due QUEUED rows with SELECT ... FOR UPDATE SKIP LOCKED and
   marks them claimed by this worker until a lease runs out (an expired claim is free again);
2. SENDING is committed (through the status ledger) before the HTTP call, and only by the
   worker that still holds the claim;
3. the outcome is committed right after the call: PENDING with the message id, FAILED, back to
   QUEUED (the gateway certainly did not take it), or UNKNOWN (it may have: never resent
   automatically). A SENDING row whose lease ran out belonged to a worker that died mid-send:
   it becomes UNKNOWN.
No transaction is open during an HTTP call.

Two breakers pause a blast and say why: a run of failed sends of one kind (blast_count_send),
and poor delivery of the sends that went out (blast_check_delivery_health).
"""

import logging
import math
import os
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case, Exists, F, Min, OuterRef, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from blastsite.logs import log_event

from .delivery_health import blast_check_delivery_health
from .models import Blast, BlastRecipient, Device, Heartbeat, OptOut, StatusHistory, WebhookEvent
from .pacing import device_block, device_reserve_slot
from .recipients import message_render
from .services import (
    BlastStateError,
    blast_complete,
    blast_pause,
    blast_queue,
    blast_start,
    recipient_advance,
    worker_heartbeat,
)
from .statuses import ACTIVE
from .threads import run_in_threads
from .tracking import poll_after, webhook_events_apply_waiting
from .wsapme import FailureKind, Outcome, SendResult, WsapmeClient

log = logging.getLogger(__name__)
HEARTBEAT_EVERY = timedelta(seconds=15)
# How often each sender looks for lost sends (leases of a minute) and long-overdue scheduled
# blasts (hours late): every claim would be two statements a message at high concurrency.
HOUSEKEEPING_EVERY = timedelta(seconds=5)
Status = BlastRecipient.Status
Source = StatusHistory.Source
UNCLAIM = {"claimed_by": "", "claimed_until": None}

# Consecutive failed sends of one kind that pause a blast; other kinds never do.
BREAKER_THRESHOLDS = {
    FailureKind.UNAUTHORIZED: 3,
    FailureKind.DEVICE_OFFLINE: 3,
    FailureKind.UNAVAILABLE: 10,
    FailureKind.TIMEOUT: 5,
    FailureKind.BAD_ANSWER: 5,
}


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
        lease = timedelta(seconds=settings.SEND_LEASE_SECONDS)
        BlastRecipient.objects.filter(pk__in=ids).update(claimed_by=worker, claimed_until=now + lease)
    return ids


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


def blast_count_send(*, blast: Blast, result: SendResult) -> None:
    """The circuit breaker: N failed sends in a row of the same kind pause the blast."""
    threshold = BREAKER_THRESHOLDS.get(result.kind)
    if threshold is None:
        if blast.failure_streak:
            Blast.objects.filter(pk=blast.pk).update(failure_streak=0, failure_kind="")
        return
    Blast.objects.filter(pk=blast.pk).update(
        failure_streak=Case(When(failure_kind=result.kind, then=F("failure_streak") + 1), default=Value(1)),
        failure_kind=result.kind,
    )
    streak = Blast.objects.values_list("failure_streak", flat=True).get(pk=blast.pk)
    if streak >= threshold:
        with suppress(BlastStateError):  # paused already (by a person, or another sender's breaker)
            blast_pause(
                blast=blast, reason=f"{streak} sends in a row failed: {result.reason}. Fix it, then resume."
            )


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


@dataclass
class Sender:
    """One sending worker: claims, paces and sends until nothing is due (or, with `loop`, forever)."""

    client: WsapmeClient
    worker: str = field(default_factory=worker_name)
    blast_id: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    sleep: Callable[[float], object] | None = None  # default: wait on `stop`, so a stop wakes it
    rng: random.Random = field(default_factory=random.Random)
    on_outcome: Callable[[Done], None] = lambda outcome: None
    idle_seconds: float = 1.0
    health_checked: dict[int, datetime] = field(default_factory=dict)  # blast id -> its last health check
    beat_at: datetime | None = None  # when this worker last said it is alive
    housekept_at: datetime | None = None  # when this worker last reaped lost sends and held stale blasts
    sent_ids: list[str] = field(default_factory=list)  # message ids sent in the current batch
    ended_ids: list[int] = field(default_factory=list)  # recipients whose send ended in the current batch
    batch_size: int = 0  # recipients claimed at once; 0: SEND_BATCH_SIZE

    def __post_init__(self):
        self.sleep = self.sleep or self.stop.wait

    def run(self, *, loop: bool = False) -> Counter:
        tally: Counter = Counter()
        waiting: dict[str, datetime] = {}  # device -> the slot it waits for
        while not self.stop.is_set():
            now = timezone.now()
            if loop and (self.beat_at is None or now - self.beat_at >= HEARTBEAT_EVERY):
                worker_heartbeat(role=Heartbeat.Role.SENDER, name=self.worker, note=_tally_words(tally))
                self.beat_at = now
            if self.housekept_at is None or now - self.housekept_at >= HOUSEKEEPING_EVERY:
                recipients_reap_lost_sends(now=now)
                blasts_hold_stale(now=now)
                # A sender killed between a send's outcome and its batch's end left replies waiting.
                webhook_events_apply_waiting(kind=WebhookEvent.Kind.REPLY)
                self.housekept_at = now
            waiting = {device: at for device, at in waiting.items() if at > now}
            batch = recipients_claim(
                worker=self.worker,
                limit=self.batch_size or settings.SEND_BATCH_SIZE,
                now=now,
                blast_id=self.blast_id,
                skip_devices=waiting,
            )
            if batch:
                self._send_batch(batch, tally, waiting)
                continue
            blasts_complete_finished(now=now, blast_id=self.blast_id)
            due = next_due_at(now=now, blast_id=self.blast_id)
            if due is None and not loop:
                break
            wake = min([due or now + timedelta(seconds=self.idle_seconds), *waiting.values()])
            pause = (wake - now).total_seconds()
            if not loop and pause > settings.SEND_LEASE_SECONDS:
                break  # the window is closed or a cap is reached: the next run sends the rest
            self.sleep(min(max(pause, 0.05), self.idle_seconds))
        return tally

    def _send_batch(self, batch: list[int], tally: Counter, waiting: dict) -> None:
        try:
            for index, pk in enumerate(batch):
                if self.stop.is_set():
                    recipients_release(batch[index:], worker=self.worker)
                    return
                outcome, device, slot = self.send_one(pk)
                tally[outcome] += 1
                self.on_outcome(outcome)
                if outcome == Done.WAITING:
                    waiting[device] = slot
                    recipients_release(batch[index + 1 :], worker=self.worker)
                    return
        finally:
            # Acks that beat our commit of the message id wait for it, and replies that came during a
            # send wait for its end: one look per batch, not per send.
            if self.ended_ids:
                webhook_events_apply_waiting(message_ids=self.sent_ids, recipient_ids=self.ended_ids)
                self.sent_ids, self.ended_ids = [], []

    def send_one(self, pk: int) -> tuple[Done, str, datetime | None]:
        """Send one claimed recipient; return (outcome, device, slot the device waits for)."""
        recipient = (
            BlastRecipient.objects.select_related("blast")
            .annotate(opted_out=Exists(OptOut.objects.filter(phone=OuterRef("phone"))))
            .get(pk=pk)
        )
        blast = recipient.blast
        if recipient.status != Status.QUEUED or recipient.claimed_by != self.worker:
            return Done.LOST, blast.device, None  # the claim expired and another worker took it
        if blast.state not in ACTIVE:
            recipients_release([pk], worker=self.worker)
            return Done.RELEASED, blast.device, None
        if reason := _reason_to_skip(recipient, blast):
            recipient_advance(
                recipient=pk, status=Status.SKIPPED, source=Source.SEND, reason=reason, also=UNCLAIM
            )
            return Done.SKIPPED, blast.device, None

        max_wait = settings.SEND_LEASE_SECONDS / 2
        now = timezone.now()
        slot, reserved = device_reserve_slot(blast.device, now=now, max_wait=max_wait, rng=self.rng)
        waited = reserved and slot > now
        if waited:
            self.sleep((slot - timezone.now()).total_seconds())
        # After a wait, another sender may have been told to back off (Retry-After) meanwhile.
        if not reserved or self.stop.is_set() or (waited and _blocked(blast.device)):
            recipients_release([pk], worker=self.worker)
            return Done.WAITING, blast.device, slot

        # SENDING only while this worker holds the claim and the blast is still active: a pause or a
        # cancel between the claim and now sends nothing and gives the recipient back to the queue.
        lease = timezone.now() + timedelta(seconds=settings.SEND_LEASE_SECONDS)
        if not recipient_advance(
            recipient=pk,
            status=Status.SENDING,
            source=Source.SEND,
            held_by=self.worker,
            also={"claimed_until": lease, "attempts": recipient.attempts + 1},
        ):
            recipients_release([pk], worker=self.worker)
            return Done.RELEASED, blast.device, None
        if blast.state == Blast.State.QUEUED:  # queued again after a resume too
            with suppress(BlastStateError):  # another sender started it, or a person paused it, meanwhile
                blast_start(blast=blast)
        result = self.client.send(
            device=blast.device, to=recipient.phone, message=message_render(blast.message, recipient)
        )
        log_event(log, "send", blast=blast.pk, recipient=pk, outcome=result.outcome, kind=result.kind or None)
        outcome = _record(recipient, blast, result, self.rng)
        self.ended_ids.append(pk)
        if outcome == Done.SENT:
            self.sent_ids.append(result.message_id)
        self._watch_delivery_health(blast)
        return outcome, blast.device, None

    def _watch_delivery_health(self, blast: Blast) -> None:
        """Run the delivery-health breaker on this blast at most every DELIVERY_HEALTH_CHECK_SECONDS."""
        now = timezone.now()
        last = self.health_checked.get(blast.pk)
        if last and (now - last).total_seconds() < settings.DELIVERY_HEALTH_CHECK_SECONDS:
            return
        self.health_checked[blast.pk] = now
        blast_check_delivery_health(blast=blast, now=now)


def _reason_to_skip(recipient: BlastRecipient, blast: Blast) -> str:
    """Checked right before each send: why this recipient should not get the message now ('' to send)."""
    if recipient.opted_out:  # annotated by send_one's query
        return "Opted out"
    if recipient.is_canary:
        return ""  # the team's phones get every blast: they are how we know the device sends
    if blast.parent_id:
        # A follow-up's membership is checked again: someone who answered the earlier blast is done.
        earlier = BlastRecipient.objects.filter(blast_id=blast.parent_id, phone=recipient.phone)
        status = earlier.values_list("status", flat=True).first()
        if status is not None and status >= Status.REPLIED:
            return f"{Status(status).label} on the earlier blast since this follow-up was made"
    if settings.FREQUENCY_CAP_DAYS:
        since = timezone.now() - timedelta(days=settings.FREQUENCY_CAP_DAYS)
        recent = BlastRecipient.objects.filter(phone=recipient.phone, sent_at__gte=since).exclude(blast=blast)
        if blast.parent_id:
            recent = recent.exclude(blast_id=blast.parent_id)  # a follow-up may message its own audience
        if last := recent.order_by("-sent_at").values_list("sent_at", flat=True).first():
            return f"Messaged {timezone.localtime(last):%Y-%m-%d %H:%M} (frequency cap {settings.FREQUENCY_CAP_DAYS:g} days)"
    return ""


def _blocked(device_id: str) -> bool:
    return Device.objects.filter(pk=device_id, blocked_until__gt=timezone.now()).exists()


def send_due(
    *,
    client: WsapmeClient,
    blast_id: int | None = None,
    loop: bool = False,
    concurrency: int = 1,
    stop: threading.Event | None = None,
    on_outcome: Callable[[Done], None] = lambda outcome: None,
) -> Counter:
    """Run `concurrency` senders (threads, each with its own connection) until done; sum their tallies."""
    stop = stop or threading.Event()
    # Threads share the claims: a batch of SEND_BATCH_SIZE each would leave the last senders with
    # the whole tail of the blast while the others idle. Split it so the queue empties evenly.
    senders = {
        "client": client,
        "blast_id": blast_id,
        "stop": stop,
        "on_outcome": on_outcome,
        "batch_size": math.ceil(settings.SEND_BATCH_SIZE / concurrency),
    }
    return sum(run_in_threads(lambda: Sender(**senders).run(loop=loop), concurrency), Counter())


def blast_prepare_send(blast_id: int) -> Blast:
    """The blast `send_blast` sends in the foreground: queued now if it is a draft."""
    blast = Blast.objects.filter(pk=blast_id).first()
    if blast is None:
        raise ValidationError(f"There is no blast {blast_id}.")
    if blast.state == Blast.State.DRAFT:
        blast_queue(blast=blast)
    elif blast.state not in ACTIVE:
        why = f" ({blast.state_reason})" if blast.state_reason else ""
        raise ValidationError(
            f"Blast {blast_id} is {blast.get_state_display().lower()}{why}; nothing to send."
        )
    return blast


def _tally_words(tally: Counter) -> str:
    return ", ".join(f"{done} {tally[done]}" for done in (Done.SENT, Done.FAILED, Done.UNKNOWN, Done.SKIPPED))
