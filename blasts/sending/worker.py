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
from functools import cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.utils import timezone

from blastsite.logs import log_event

from ..alerts import webhook_backlog_alert, workers_alert_quiet
from ..audit import Actor
from ..gateway.client import WsapmeClient
from ..lifecycle import BlastStateError, blast_queue, blast_start
from ..models import Blast, BlastRecipient, Contact, Device, Heartbeat, OptOut, StatusHistory, WebhookEvent
from ..recipients import message_render
from ..services import recipient_advance, worker_heartbeat
from ..statuses import ACTIVE
from ..threads import run_in_threads
from ..tracking.events import webhook_events_apply_waiting
from .health import blast_check_delivery_health
from .ledger import (
    UNCLAIM,
    Done,
    _record,
    blasts_complete_finished,
    blasts_hold_stale,
    next_due_at,
    recipients_claim,
    recipients_reap_lost_sends,
    recipients_release,
    worker_name,
)
from .pacing import device_reserve_slot

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
                worker_heartbeat(role=Heartbeat.Role.SENDER, name=self.worker, note=_heartbeat_words(tally))
                self.beat_at = now
            if self.housekept_at is None or now - self.housekept_at >= HOUSEKEEPING_EVERY:
                recipients_reap_lost_sends(now=now)
                blasts_hold_stale(now=now)
                workers_alert_quiet(now=now)  # the poller gone quiet: tell people
                webhook_backlog_alert(now=now)  # webhook events waiting on a stopped or slow applier
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
        recipient, device = recipient_for_send(pk)
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


# send_one's read, written once: the recipient with its blast, contact, whether the number opted out,
# and the device's pacing row, in one statement (it was two ORM queries, compiled again for every
# message). The columns come from the models, so a new column is read without a change here.
_SEND_READ = """
    SELECT {columns}, EXISTS (SELECT 1 FROM {optout} o WHERE o.phone = r.phone)
    FROM {recipient} r
    JOIN {blast} b ON b.id = r.blast_id
    LEFT JOIN {contact} c ON c.id = r.contact_id
    LEFT JOIN {device} d ON d.device_id = b.device
    WHERE r.id = %s"""
_READ_MODELS = (("r", BlastRecipient), ("b", Blast), ("c", Contact), ("d", Device))


@cache
def _send_read_plan(vendor: str) -> tuple[str, list[tuple[type, list, int]]]:
    """The statement, and each model with its fields' converters (what the ORM applies to a row) and
    where its primary key is (NULL: no row, as a LEFT JOIN gives for a canary's contact)."""
    quote = connection.ops.quote_name
    columns, plan = [], []
    for alias, model in _READ_MODELS:
        fields = []
        for f in model._meta.concrete_fields:
            columns.append(f"{alias}.{quote(f.column)}")
            col = f.get_col(alias)
            converters = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            fields.append((col, converters))
        plan.append((model, fields, [f.primary_key for f in model._meta.concrete_fields].index(True)))
    tables = {
        name: quote(model._meta.db_table)
        for name, model in (
            ("recipient", BlastRecipient),
            ("blast", Blast),
            ("contact", Contact),
            ("device", Device),
            ("optout", OptOut),
        )
    }
    return _SEND_READ.format(columns=", ".join(columns), **tables), plan


def recipient_for_send(pk: int) -> tuple[BlastRecipient, Device | None]:
    """The claimed recipient with its blast, contact and `opted_out`, and the blast's device row (None
    before its first use): one statement."""
    db = connections[DEFAULT_DB_ALIAS]  # once: `connection` looks itself up on every use
    sql, plan = _send_read_plan(db.vendor)
    with db.cursor() as cursor:
        cursor.execute(sql, [pk])
        row = cursor.fetchone()
    if row is None:
        raise BlastRecipient.DoesNotExist(f"recipient {pk} does not exist")
    objects, at = [], 0
    for model, fields, pk_at in plan:
        values = []
        for col, converters in fields:
            value = row[at]
            for convert in converters:
                value = convert(value, col, db)
            values.append(value)
            at += 1
        objects.append(model.from_db(db.alias, None, values) if values[pk_at] is not None else None)
    recipient, blast, contact, device = objects
    recipient.blast = blast
    recipient.contact = contact
    recipient.opted_out = bool(row[at])
    return recipient, device


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
