"""Status polls: getMessageStatus asked on a ladder after each send, and checks a person asks for.

A poll's answer goes through recipient_advance like a webhook's, so the two racing change nothing
twice. Pollers claim due rows with SKIP LOCKED, so overlapping runs ask about each message once.
"""

import logging
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from blastsite.logs import log_event

from ..alerts import webhook_backlog_alert, workers_alert_quiet
from ..audit import SYSTEM, Actor, Did, audit_record
from ..gateway.client import WsapmeClient, WsapmeError
from ..models import Blast, BlastRecipient, StatusCheck, StatusHistory, WebhookEvent
from ..reporting.rollups import rollups_refresh_due
from ..services import recipient_advance
from ..statuses import status_from_gateway
from ..threads import run_in_threads
from .events import webhook_events_apply_waiting

log = logging.getLogger(__name__)
Status = BlastRecipient.Status
Source = StatusHistory.Source
State = WebhookEvent.State
Kind = WebhookEvent.Kind


# Not final: a later status may still come. Read (and anything after it) and FAILED are final.
NOT_FINAL = (Status.PENDING, Status.SERVER_ACK, Status.DELIVERY_ACK)
# When to ask getMessageStatus again, counted from the send; after the last step we stop.
POLL_LADDER = tuple(timedelta(minutes=minutes) for minutes in (2, 10, 30, 2 * 60, 6 * 60, 24 * 60, 72 * 60))


def poll_after(sent_at: datetime, polls: int) -> datetime | None:
    """When to poll a message next, after `polls` polls; None once the ladder is done."""
    return sent_at + POLL_LADDER[polls] if polls < len(POLL_LADDER) else None


# --- webhooks -------------------------------------------------------------------------------------


NOTHING_TO_CHECK = "Nothing to check: no sent message of this blast is waiting for a status."
# A status check with nothing counted for this long may be waiting for a poller that is not running.
CHECK_QUIET_AFTER = timedelta(minutes=2)
# A poller that died (killed, its machine lost) takes the marked messages it had claimed with it: a
# check with none left to claim and nothing counted for this long is finished without them. A live
# poller counts one far sooner: a question takes at most the client's timeouts (25 s by default),
# unless the gateway's Retry-After holds the device longer.
CHECK_LOST_AFTER = timedelta(minutes=10)


class Polled(StrEnum):
    """What one status check of a message came to: the keys of a poll run's tally."""

    UPDATED = "updated"  # the ledger applied the gateway's status
    UNCHANGED = "unchanged"  # nothing newer than what we had
    UNKNOWN = "unknown"  # the gateway does not know the message right now
    ERROR = "error"  # the check itself failed


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


def blast_check_statuses(*, blast: Blast, by: Actor = SYSTEM) -> StatusCheck | None:
    """Mark the blast's unfinished messages for the poller to ask about first; return the check.

    The request itself asks the gateway nothing: a big blast would outlast the web worker's timeout.
    A check of this blast still running is returned instead of a second one (a double click).
    None: no sent message of the blast is waiting for a status, so there is nothing to check.
    """
    with transaction.atomic():
        Blast.objects.select_for_update().get(pk=blast.pk)  # one request per blast at a time
        running = StatusCheck.objects.filter(blast=blast, finished_at__isnull=True).first()
        if running:
            return running
        check = StatusCheck.objects.create(blast=blast, requested_by=by.user)
        unfinished = blast.recipients.filter(status__in=NOT_FINAL, message_id__isnull=False)
        check.queued = unfinished.update(status_check=check)
        if not check.queued:
            transaction.set_rollback(True)  # an empty check is no check: keep no trace of it
            return None
        check.save(update_fields=["queued"])
        audit_record(by, Did.STATUS_CHECK, blast=blast, messages=check.queued)
    return check


def status_check_words(check: StatusCheck | None) -> str:
    """What the person who asked for a check is told: how many messages it asks about."""
    if check is None:
        return NOTHING_TO_CHECK
    what = "message's status" if check.queued == 1 else "messages' statuses"
    so_far = f" ({check.checked} checked so far)" if check.checked else ""
    return f"Checking {check.queued} {what}…{so_far}"


def status_check_count(*, check_id: int, outcome: Polled) -> None:
    """Count one polled message into its status check; the last one finishes the check."""
    now = timezone.now()
    StatusCheck.objects.filter(pk=check_id).update(
        checked=F("checked") + 1,
        updated=F("updated") + int(outcome == Polled.UPDATED),
        errors=F("errors") + int(outcome == Polled.ERROR),
        last_checked_at=now,
    )
    StatusCheck.objects.filter(pk=check_id, finished_at__isnull=True, checked__gte=F("queued")).update(
        finished_at=now
    )


def status_checks_finish_lost(*, now: datetime) -> int:
    """Finish the checks a dead poller left short (see CHECK_LOST_AFTER); return how many."""
    quiet_since = now - CHECK_LOST_AFTER
    still_marked = BlastRecipient.objects.filter(status_check__isnull=False).values("status_check_id")
    return (
        StatusCheck.objects.filter(finished_at__isnull=True)
        .filter(
            Q(last_checked_at__lt=quiet_since) | Q(last_checked_at__isnull=True, requested_at__lt=quiet_since)
        )
        .exclude(pk__in=still_marked)
        .update(finished_at=now)
    )


def recipients_claim_for_poll(*, now: datetime, limit: int) -> list[tuple[int, str, str, int, int | None]]:
    """Take the messages status checks marked, oldest check first, then due ones; (pk, message id, device, blast, check).

    Marks are cleared and due messages moved to their next rung in the same transaction, so
    overlapping runs never poll one twice. A marked message is taken whatever its status now: a
    webhook that finished it after the check was asked for costs one more question, and the check
    still counts it. A marked message that was due anyway moves up the ladder too, not asked twice.
    """
    fields = (
        "pk",
        "message_id",
        "blast__device",
        "blast_id",
        "status_check_id",
        "polls",
        "sent_at",
        "next_poll_at",
    )
    locked = BlastRecipient.objects.select_for_update(skip_locked=True, of=("self",))
    with transaction.atomic():
        marked = list(
            locked.filter(status_check__isnull=False).order_by("status_check_id").values_list(*fields)[:limit]
        )
        due = list(
            locked.filter(status__in=NOT_FINAL, message_id__isnull=False, next_poll_at__lte=now)
            .filter(status_check__isnull=True)
            .order_by("next_poll_at")
            .values_list(*fields)[: limit - len(marked)]
        )
        BlastRecipient.objects.filter(pk__in=[row[0] for row in marked]).update(status_check=None)
        moved = [
            BlastRecipient(pk=pk, polls=polls + 1, next_poll_at=poll_after(sent_at or now, polls + 1))
            for pk, *_, polls, sent_at, next_poll_at in marked + due
            if next_poll_at and next_poll_at <= now
        ]
        BlastRecipient.objects.bulk_update(moved, ["polls", "next_poll_at"])
    return [row[:5] for row in marked + due]


def recipients_give_back_to_checks(rows: list[tuple[int, str, str, int, int | None]]) -> None:
    """Mark claimed messages that were not polled (the poller is stopping) for their checks again."""
    for pk, _, _, _, check_id in rows:
        if check_id:
            BlastRecipient.objects.filter(pk=pk, status_check__isnull=True).update(status_check_id=check_id)


def poll_one(
    client: WsapmeClient,
    limiter: _DeviceLimiter,
    pk: int,
    message_id: str,
    device: str,
    blast_id: int | None = None,
) -> Polled:
    """Ask the gateway for one message's status and apply it; return what the check came to."""
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
            outcome=Polled.ERROR,
            error=exc,
        )
        return Polled.ERROR
    status = status_from_gateway(result.status) if result.known else None
    if status is None:  # {"success": false, "data": {}} means "unknown right now", not a failure
        return Polled.UNKNOWN
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
    return Polled.UPDATED if applied else Polled.UNCHANGED


def poll_due(
    *,
    client: WsapmeClient,
    blast_id: int | None = None,
    concurrency: int | None = None,
    stop: threading.Event | None = None,
) -> Counter:
    """Poll every message marked by a status check or due (or every unfinished one of `blast_id`, now).

    A few threads share the work. Once `stop` is set each one stops before its next question and
    gives the marked messages it had claimed back to their checks.
    """
    stop = stop or threading.Event()
    limiter = _DeviceLimiter(settings.POLL_RATE_PER_SECOND)
    tally: Counter = Counter()
    lock = threading.Lock()
    if blast_id:
        Blast.objects.get(pk=blast_id)  # DoesNotExist for a wrong id
        todo = [
            (*row, None)
            for row in BlastRecipient.objects.filter(
                blast_id=blast_id, status__in=NOT_FINAL, message_id__isnull=False
            )
            .order_by("id")
            .values_list("pk", "message_id", "blast__device", "blast_id")
        ]

        def next_batch():
            with lock:
                batch, todo[:] = todo[:20], todo[20:]
            return batch
    else:

        def next_batch():
            return recipients_claim_for_poll(now=timezone.now(), limit=20)

    def work():
        while not stop.is_set() and (batch := next_batch()):
            for index, (pk, message_id, device, blast, check_id) in enumerate(batch):
                if stop.is_set():
                    recipients_give_back_to_checks(batch[index:])
                    return
                outcome = poll_one(client, limiter, pk, message_id, device, blast)
                if check_id:
                    status_check_count(check_id=check_id, outcome=outcome)
                with lock:
                    tally[outcome] += 1

    run_in_threads(work, max(concurrency or settings.POLL_CONCURRENCY, 1))
    return tally


def poll_pass(
    *, client: WsapmeClient, concurrency: int | None = None, stop: threading.Event | None = None
) -> tuple[Counter, int]:
    """One run of the poller: early acks, every marked or due message, then checks a dead poller left short.

    Returns the poll outcomes and how many early acks found their message.
    """
    early_acks = webhook_events_apply_waiting()
    tally = poll_due(client=client, concurrency=concurrency, stop=stop)
    status_checks_finish_lost(now=timezone.now())
    workers_alert_quiet(now=timezone.now())  # the senders gone quiet: tell people
    webhook_backlog_alert(now=timezone.now())  # webhook events waiting on a stopped or slow applier
    rollups_refresh_due()  # the overview's rollups of settled blasts, once a minute
    return tally, early_acks


def poll_summary(tally: Counter, early_acks: int) -> str:
    """A run's outcomes in one line, for the command's output and the poller's heartbeat."""
    return (
        f"checked {sum(tally.values())}, updated {tally[Polled.UPDATED]}, unknown {tally[Polled.UNKNOWN]}, "
        f"errors {tally[Polled.ERROR]}; early acks matched {early_acks}"
    )
