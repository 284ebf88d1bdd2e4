"""The applier: webhook events the webhook stored, applied through the ledger in batches.

The webhook only stores (events.webhook_events_store) and answers. `manage.py apply_events` claims
unapplied events in arrival order with FOR UPDATE SKIP LOCKED, so several appliers on several hosts
share the queue, and applies each batch in one transaction together with what it records about each
event: a kill -9 mid-batch rolls all of it back, and the next applier applies it again, once.

Acks for sends we know are applied set-based (services.recipients_advance_many: one UPDATE, one
history INSERT); replies, acks that beat their send and acks for sends whose outcome was unknown go
one by one through the same rules as ever (events.webhook_event_apply). Within a batch the set-based
acks go first, as if they had arrived before the batch's replies. An event that fails to apply
marks the batch for a second pass, one event per transaction, where it alone is marked for review.
"""

import logging
import threading
import time
from collections import Counter
from datetime import datetime

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from blastsite.logs import log_event

from ..bulk import rows_update
from ..gateway.payloads import StatusEvent, parse_event
from ..models import BlastRecipient, Heartbeat, StatusHistory, WebhookEvent
from ..services import Advance, recipients_advance_many, worker_heartbeat
from ..text import fit
from .events import ERROR_REASON, webhook_event_apply, webhook_event_describe, webhook_events_apply_waiting

log = logging.getLogger(__name__)
State = WebhookEvent.State
Status = BlastRecipient.Status

CHANNEL = "blasts_webhook_events"  # migration 0018's trigger NOTIFYs it when the webhook stores events
BATCH_SIZE = 500
HEARTBEAT_SECONDS = 5.0
# The database itself failing (down, restarting, a deadlock): nothing is marked, the batch is tried again.
TRANSIENT = (OperationalError, InterfaceError)
# What applying an event writes on its record.
DESCRIBED = [
    "kind",
    "message_id",
    "status",
    "phone",
    "occurred_at",
    "recipient",
    "state",
    "note",
    "applied_at",
]


def webhook_events_apply(*, limit: int = BATCH_SIZE) -> Counter:
    """Claim up to `limit` unapplied events and apply them; return how many ended in each state."""
    claimed: list[int] = []
    try:
        with transaction.atomic():
            _commit_without_waiting_for_disk()
            records = list(
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(state=State.RECEIVED)
                .order_by("id")[:limit]
            )
            claimed = [record.pk for record in records]
            _apply_batch(records)
    except TRANSIENT:
        raise
    except Exception:
        if not claimed:
            raise
        log.exception("a batch of %s webhook events failed; applying them one by one", len(claimed))
        records = [record for pk in claimed if (record := _apply_alone(pk)) is not None]
    # Committed: look once more for what a waiting event waits for. The sender commits first and then
    # looks for waiting events, so one of the two sides always sees the other.
    waiting = [record for record in records if record.state == State.WAITING]
    if waiting:
        webhook_events_apply_waiting(
            message_ids=[r.message_id for r in waiting if r.kind == WebhookEvent.Kind.STATUS],
            recipient_ids=[r.recipient_id for r in waiting if r.kind == WebhookEvent.Kind.REPLY],
        )
    tally = Counter(record.state for record in records)
    if records:
        log_event(log, "applied", events=len(records), **tally)
    return tally


def _commit_without_waiting_for_disk() -> None:
    """On PostgreSQL, this transaction's commit does not wait for its WAL to reach the disk (~15 ms a
    batch here). Safe: a batch lost to a database crash rolls back whole, state included, so its
    events are RECEIVED again and applied again; the events themselves were stored durably."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")


def _apply_batch(records: list[WebhookEvent]) -> None:
    pairs = [(record, parse_event(record.body)) for record in records]
    for record, event in pairs:
        webhook_event_describe(record, event)
    acks = [(r, e) for r, e in pairs if isinstance(e, StatusEvent) and e.status is not None]
    wanted = {event.message_id for _, event in acks}
    sent = dict(BlastRecipient.objects.filter(message_id__in=wanted).values_list("message_id", "pk"))
    known = [(record, event) for record, event in acks if event.message_id in sent]
    moved = recipients_advance_many(
        [
            Advance(
                recipient=sent[e.message_id],
                status=e.status,
                occurred_at=e.occurred_at,
                raw=r.body,
                reason=ERROR_REASON if e.status == Status.FAILED else "",
            )
            for r, e in known
        ],
        source=StatusHistory.Source.WEBHOOK,
    )
    for (record, event), applied in zip(known, moved, strict=True):
        record.recipient_id = sent[event.message_id]
        record.state = State.APPLIED if applied else State.NO_CHANGE
    done = {id(record) for record, _ in known}
    for record, event in pairs:
        if id(record) not in done:
            webhook_event_apply(record, event)
    now = timezone.now()
    for record in records:
        record.applied_at = now
    rows_update(WebhookEvent, records, DESCRIBED)


def _apply_alone(pk: int) -> WebhookEvent | None:
    """Apply one event in a transaction of its own; one that fails is marked for review with the error."""
    with transaction.atomic():
        record = WebhookEvent.objects.select_for_update(skip_locked=True).filter(pk=pk, state=State.RECEIVED)
        record = record.first()
        if record is None:
            return None  # another applier has it, or has applied it
        try:
            with transaction.atomic():
                event = parse_event(record.body)
                webhook_event_describe(record, event)
                webhook_event_apply(record, event)
        except TRANSIENT:
            raise
        except Exception as exc:
            log.exception("webhook event %s could not be applied; marked for review", pk)
            record.recipient, record.state = None, State.REVIEW
            record.note = fit(WebhookEvent, "note", f"Could not be applied: {type(exc).__name__}: {exc}")
        record.applied_at = timezone.now()
        record.save()
    return record


def webhook_events_replay(*, since: datetime) -> int:
    """Queue again the stored events received since `since` that did not apply (waiting, ignored,
    unattributed, for review, no change); return how many. The ledger makes applying them again
    safe; events that applied keep their record."""
    again = WebhookEvent.objects.filter(received_at__gte=since).exclude(
        state__in=[State.APPLIED, State.RECEIVED]
    )
    return again.update(state=State.RECEIVED, applied_at=None)


class Waker:
    """How an applier learns there is work: PostgreSQL's NOTIFY on a session of its own, else a poll.

    LISTEN needs a session, which a transaction pooler (PgBouncer in transaction mode, Neon's -pooler
    hosts) does not keep: behind one, it listens on DATABASE_DIRECT_URL when that is set, or polls.
    """

    def __init__(self, every: float):
        self.every, self.listener = every, None
        db = connections[DEFAULT_DB_ALIAS]
        if db.vendor != "postgresql":
            self.how, self.connect = f"polling every {every:g} s (SQLite has no NOTIFY)", None
        elif settings.DATABASE_DIRECT_URL:
            self.how = f"woken by NOTIFY on the direct connection (DATABASE_DIRECT_URL), or every {every:g} s"
            self.connect = lambda: psycopg.connect(settings.DATABASE_DIRECT_URL, autocommit=True)
        elif settings.DATABASE_POOLED:
            self.how = (
                f"polling every {every:g} s: the database is behind a transaction pooler, where LISTEN "
                "does not work (set DATABASE_DIRECT_URL to a direct connection to be woken at once)"
            )
            self.connect = None
        else:
            self.how = f"woken by NOTIFY on the database, or every {every:g} s"
            self.connect = lambda: db.get_new_connection(db.get_connection_params())

    def wait(self, stop: threading.Event) -> None:
        """Return when events may have arrived: a notice, `every` seconds, or a stop."""
        if self.connect is None:
            stop.wait(self.every)
            return
        try:
            if self.listener is None:
                self.listener = self.connect()
                self.listener.autocommit = True
                self.listener.execute(f"LISTEN {CHANNEL}")
                return  # events may have arrived before it listened
            for _notice in self.listener.notifies(timeout=self.every, stop_after=1):
                pass
        except psycopg.Error:
            log.warning("the applier's LISTEN connection failed; polling until it is back", exc_info=True)
            self.close()
            stop.wait(self.every)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None


def applier_loop(*, stop: threading.Event, waker: Waker, limit: int, name: str, forever: bool) -> Counter:
    """Apply batches until none is left (or, `forever`, until `stop`); a heartbeat every few seconds."""
    total, beat = Counter(), 0.0
    while not stop.is_set():
        try:
            tally = webhook_events_apply(limit=limit)
        except TRANSIENT:
            log.exception("the database failed while applying webhook events; trying again")
            connections[DEFAULT_DB_ALIAS].close()
            if not forever:
                raise
            stop.wait(waker.every)
            continue
        total += tally
        if forever and time.monotonic() - beat >= HEARTBEAT_SECONDS:
            beat = time.monotonic()
            worker_heartbeat(role=Heartbeat.Role.APPLIER, name=name, note=applier_summary(total))
        if sum(tally.values()) < limit:  # the queue is empty (a full batch: more are waiting)
            if not forever:
                break
            waker.wait(stop)
    return total


def applier_summary(tally: Counter) -> str:
    """'Applied 12 events: 9 applied, 2 no change, 1 waiting.' in the states' order."""
    total = sum(tally.values())
    parts = [
        f"{tally[state]} {label.split(' (')[0].lower()}" for state, label in State.choices if tally.get(state)
    ]
    return f"Applied {total} event{'s' if total != 1 else ''}" + (f": {', '.join(parts)}." if parts else ".")
