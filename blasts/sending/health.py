"""The delivery-health breaker: pause a blast whose recent sends are not being delivered.

A ban or a silent drop shows as messages that reach WhatsApp's server and are never delivered;
a restricted number as ERRORs. Each sender calls blast_check_delivery_health now and then
(Sender._watch_delivery_health) with the DELIVERY_HEALTH_* settings.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, F, Q
from django.utils import timezone

from ..lifecycle import BlastStateError, blast_pause
from ..models import Blast, BlastRecipient
from ..statuses import ACTIVE
from ..templatetags.blasts_extras import duration

log = logging.getLogger(__name__)
Status = BlastRecipient.Status


@dataclass(frozen=True)
class DeliveryHealth:
    """How a blast's recent sends, old enough to judge, have fared (each send counts once)."""

    judged: int = 0
    delivered: int = 0  # reached DELIVERY_ACK within the wait
    late: int = 0  # reached it, later than that
    server_ack: int = 0  # stopped at server ack, never delivered: how a ban or a silent drop looks
    pending: int = 0  # never reached WhatsApp's server
    errors: int = 0  # ERROR after being sent


def blast_delivery_health(
    blast_id: int, *, now: datetime, window: int, wait: timedelta, since: datetime | None = None
) -> DeliveryHealth:
    """The blast's last `window` sends made at least `wait` before `now` (and not before `since`), by outcome.

    One query. delivered_at may be the gateway's clock and sent_at is ours; a few seconds of skew
    do not matter against a wait of minutes.
    """
    sends = BlastRecipient.objects.filter(blast_id=blast_id, sent_at__lte=now - wait)
    if since is not None:
        sends = sends.filter(sent_at__gte=since)
    in_time = Q(delivered_at__lte=F("sent_at") + wait)
    counts = sends.order_by("-sent_at", "-id")[:window].aggregate(
        judged=Count("pk"),
        delivered=Count("pk", filter=in_time),
        late=Count("pk", filter=Q(delivered_at__isnull=False) & ~in_time),
        server_ack=Count("pk", filter=Q(status=Status.SERVER_ACK)),
        pending=Count("pk", filter=Q(status=Status.PENDING)),
        errors=Count("pk", filter=Q(status=Status.FAILED)),  # only an ERROR fails a sent message
    )
    return DeliveryHealth(**counts)


def delivery_health_problem(
    health: DeliveryHealth, *, min_sample: int, min_rate: float, max_error_rate: float, wait: timedelta
) -> str:
    """Why a blast with this health should pause, in plain words; '' when healthy or too few to judge."""
    judged = health.judged
    if not judged or judged < min_sample:
        return ""
    if health.errors / judged > max_error_rate:
        return (
            f"{health.errors} of the last {judged} messages came back ERROR from WhatsApp "
            f"(limit {max_error_rate:.0%}). WhatsApp is refusing them and the number may be restricted: "
            "check it, then resume."
        )
    if health.delivered / judged >= min_rate:
        return ""
    # What became of the rest, the largest first (on a tie, in this order), and what it suggests.
    causes = [
        (
            health.server_ack,
            "stopped at server ack, never delivered",
            "The number may be banned or its messages silently dropped",
        ),
        (health.pending, "never reached WhatsApp's server", "The device may be offline"),
        (health.errors, "came back ERROR", "WhatsApp is refusing them"),
        (health.late, "were delivered later", "The recipients' phones may be off, or the wait too short"),
    ]
    causes = sorted((cause for cause in causes if cause[0]), key=lambda cause: -cause[0])[:2]
    found = "".join(f"; {count} {what}" for count, what, _ in causes)
    hint = f" {causes[0][2]}." if causes else ""
    return (
        f"Only {health.delivered} of the last {judged} messages were delivered within {duration(wait)} "
        f"(threshold {min_rate:.0%}){found}.{hint} Check the number, then resume."
    )


def blast_check_delivery_health(*, blast: Blast, now: datetime | None = None) -> bool:
    """The delivery-health breaker: pause a sending blast whose recent sends are not delivered in time.

    Only sends since the blast last started count: a resume starts it again (see Sender.send_one),
    so a person who resumes is judged on new sends, not tripped again by the old ones.
    """
    window = settings.DELIVERY_HEALTH_WINDOW
    if window <= 0:
        return False
    now = now or timezone.now()
    since = Blast.objects.filter(pk=blast.pk, state__in=ACTIVE).values_list("started_at", flat=True).first()
    if since is None:
        return False  # not sending (paused, finished) or nothing sent yet
    wait = timedelta(seconds=settings.DELIVERY_HEALTH_WAIT)
    health = blast_delivery_health(blast.pk, now=now, window=window, wait=wait, since=since)
    problem = delivery_health_problem(
        health,
        min_sample=min(settings.DELIVERY_HEALTH_MIN_SAMPLE, window),
        min_rate=settings.DELIVERY_HEALTH_MIN_RATE,
        max_error_rate=settings.DELIVERY_HEALTH_MAX_ERROR_RATE,
        wait=wait,
    )
    if not problem:
        return False
    log.warning("delivery health pauses blast=%s: %s", blast.pk, health)
    try:
        blast_pause(blast=blast, reason=problem)
    except BlastStateError:
        return False  # paused or cancelled meanwhile
    return True
