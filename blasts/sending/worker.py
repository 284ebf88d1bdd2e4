"""A sending worker: claims due recipients, paces them per device and sends each once.

The claims and what a send's outcome does to a recipient are the ledger (ledger.py); this is the
loop around them, its housekeeping (lost sends, stale schedules, finished blasts) and the command's
preparation.
"""

import logging
import math
import random
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from blastsite.logs import log_event

from ..alerts import webhook_backlog_alert, workers_alert_quiet
from ..audit import Actor
from ..gateway.client import WsapmeClient
from ..lifecycle import BlastStateError, blast_queue, blast_start
from ..models import Blast, BlastRecipient, Device, Heartbeat, StatusHistory, WebhookEvent
from ..services import recipient_advance, worker_heartbeat
from ..statuses import ACTIVE
from ..threads import run_in_threads
from ..tracking.events import webhook_events_apply_waiting
from ..tracking.links import links_render
from ..variants import recipient_message
from .health import blast_check_delivery_health
from .ledger import (
    UNCLAIM,
    Done,
    _record,
    blasts_complete_finished,
    blasts_hold_stale,
    next_due_at,
    recipients_reap_lost_sends,
    recipients_release,
    worker_name,
)
from .pacing import device_reserve_slot
from .reads import EndedSends, SendRead, recipient_for_send, recipients_claim_and_read
from .winner import variant_tests_decide

log = logging.getLogger(__name__)
Status = BlastRecipient.Status
Source = StatusHistory.Source


HEARTBEAT_EVERY = timedelta(seconds=15)
# How often each sender looks for lost sends (leases of a minute) and long-overdue scheduled
# blasts (hours late): every claim would be two statements a message at high concurrency.
HOUSEKEEPING_EVERY = timedelta(seconds=5)


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
    ended: EndedSends = field(default_factory=EndedSends)  # sends whose look for waiting events is to come
    batch_size: int = 0  # recipients claimed at once; 0: SEND_BATCH_SIZE

    def __post_init__(self):
        self.sleep = self.sleep or self.stop.wait

    def run(self, *, loop: bool = False) -> Counter:
        try:
            return self._run(loop)
        finally:
            self.ended.look()

    def _run(self, loop: bool) -> Counter:
        tally: Counter = Counter()
        waiting: dict[str, datetime] = {}  # device -> the slot it waits for
        while not self.stop.is_set():
            now = timezone.now()
            if loop and (self.beat_at is None or now - self.beat_at >= HEARTBEAT_EVERY):
                worker_heartbeat(role=Heartbeat.Role.SENDER, name=self.worker, note=_heartbeat_words(tally))
                self.beat_at = now
            if self.housekept_at is None or now - self.housekept_at >= HOUSEKEEPING_EVERY:
                recipients_reap_lost_sends(now=now)
                blasts_hold_stale(now=now)
                workers_alert_quiet(now=now)  # the poller gone quiet: tell people
                webhook_backlog_alert(now=now)  # webhook events waiting on a stopped or slow applier
                # A sender killed between a send's outcome and its next read left replies waiting.
                webhook_events_apply_waiting(kind=WebhookEvent.Kind.REPLY)
                variant_tests_decide(now=now)  # a test's wait over: its held recipients get the winner
                self.housekept_at = now
            waiting = {device: at for device, at in waiting.items() if at > now}
            batch, first = recipients_claim_and_read(
                worker=self.worker,
                limit=self.batch_size or settings.SEND_BATCH_SIZE,
                now=now,
                blast_id=self.blast_id,
                skip_devices=waiting,
                ended=self.ended,
            )
            if batch:
                self._send_batch(batch, first, tally, waiting)
                continue
            self.ended.look()  # on SQLite (PostgreSQL's claim looked)
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

    def _send_batch(self, batch: list[int], first: SendRead | None, tally: Counter, waiting: dict) -> None:
        for index, pk in enumerate(batch):
            if self.stop.is_set():
                recipients_release(batch[index:], worker=self.worker)
                return
            outcome, device, slot = self.send_one(pk, read=first if index == 0 else None)
            tally[outcome] += 1
            self.on_outcome(outcome)
            if outcome == Done.WAITING:
                waiting[device] = slot
                recipients_release(batch[index + 1 :], worker=self.worker)
                return

    def send_one(self, pk: int, read: SendRead | None = None) -> tuple[Done, str, datetime | None]:
        """Send one claimed recipient; return (outcome, device, slot the device waits for).

        `read`: recipient_for_send's answer when the claim, the statement just before, read it.
        """
        recipient, device = read or recipient_for_send(pk, ended=self.ended)
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
        slot, reserved = device_reserve_slot(
            blast.device, now=now, max_wait=max_wait, rng=self.rng, device=device
        )
        waited = reserved and slot > now
        if waited:
            self.sleep((slot - timezone.now()).total_seconds())
        # After a wait, another sender may have been told to back off (Retry-After) meanwhile.
        if not reserved or self.stop.is_set() or (waited and _blocked(blast.device)):
            recipients_release([pk], worker=self.worker)
            return Done.WAITING, blast.device, slot

        # Made before SENDING: a failure here (its tracked links are written) leaves it queued.
        text = links_render(recipient, recipient_message(recipient))
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
        result = self.client.send(device=blast.device, to=recipient.phone, message=text)
        log_event(log, "send", blast=blast.pk, recipient=pk, outcome=result.outcome, kind=result.kind or None)
        outcome = _record(recipient, blast, result, self.rng)
        self.ended.add(pk, result.message_id if outcome == Done.SENT else None)
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


def blast_prepare_send(blast_id: int, by: Actor) -> Blast:
    """The blast `send_blast` sends in the foreground: queued now if it is a draft."""
    blast = Blast.objects.filter(pk=blast_id).first()
    if blast is None:
        raise ValidationError(f"There is no blast {blast_id}.")
    if blast.state == Blast.State.DRAFT:
        blast_queue(blast=blast, by=by)
    elif blast.state not in ACTIVE:
        why = f" ({blast.state_reason})" if blast.state_reason else ""
        raise ValidationError(
            f"Blast {blast_id} is {blast.get_state_display().lower()}{why}; nothing to send."
        )
    return blast


def _tally_words(tally: Counter) -> str:
    return ", ".join(f"{done} {tally[done]}" for done in (Done.SENT, Done.FAILED, Done.UNKNOWN, Done.SKIPPED))


def _heartbeat_words(tally: Counter) -> str:
    """What this sender did, in words no one takes for the funnel's: a send the gateway took may
    fail later, and then the funnel counts it failed, not sent."""
    return (
        f"gateway took {tally[Done.SENT]}, refused {tally[Done.FAILED]}, "
        f"answer lost {tally[Done.UNKNOWN]}, skipped {tally[Done.SKIPPED]}"
    )
