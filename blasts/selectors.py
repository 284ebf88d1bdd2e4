"""Named reads about blasts in flight: ETA, where recipients are stuck, progress, canaries, workers,
and the webhook events waiting for the applier.

Funnel counts, timings and comparisons are in reporting/.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from .models import Blast, BlastRecipient, Heartbeat, WebhookEvent
from .reporting.funnels import audience
from .sending.pacing import device_finish_time
from .statuses import ACTIVE, FOLLOW_UP_FROM, FUNNEL_ORDER

Status = BlastRecipient.Status


def blast_eta(blast: Blast) -> datetime | None:
    """When the blast's last message should go out by its device's pacing; None when none is left.

    Senders take blasts oldest first, so the queued recipients of older active blasts on the
    same device go before this one's.
    """
    remaining = blast.recipients.filter(status__in=[Status.QUEUED, Status.SENDING]).count()
    if not remaining or blast.state in (Blast.State.COMPLETED, Blast.State.CANCELLED):
        return None
    ahead = BlastRecipient.objects.filter(
        status=Status.QUEUED,
        blast__device=blast.device,
        blast__state__in=ACTIVE,
        blast_id__lt=blast.pk,
    ).count()
    now = timezone.now()
    start = max(now, blast.scheduled_at or now)
    return device_finish_time(blast.device, start=start, count=ahead + remaining)


# Age buckets for "how long has it stood at its current status".
AGE_BUCKETS: tuple[tuple[str, timedelta, timedelta | None], ...] = (
    ("0-1h", timedelta(0), timedelta(hours=1)),
    ("1-6h", timedelta(hours=1), timedelta(hours=6)),
    ("6-24h", timedelta(hours=6), timedelta(hours=24)),
    ("1-3d", timedelta(days=1), timedelta(days=3)),
    (">3d", timedelta(days=3), None),
)


# Why a recipient may stand at its status, in the words a marketer can act on.
PROBABLE_CAUSES = {
    Status.QUEUED: "Not sent yet: waiting for its turn in the device's pacing.",
    Status.SENDING: "Being sent right now.",
    Status.PENDING: "Waiting in the device's or WSAPME's queue: if this lasts, check that the phone is online.",
    Status.SERVER_ACK: "Reached WhatsApp, not the phone: the phone is off, it blocked us, or the number "
    "is not on WhatsApp (likely after a day).",
    Status.DELIVERY_ACK: "Delivered, not read: still unread, or read receipts are off.",
    Status.READ_ACK: "Read, no reply yet: a candidate for a follow-up.",
    Status.REPLIED: "Replied: follow up by hand and close the sale.",
    Status.CLOSED: "Closed: the sale is made.",
}


# Where the blast was cancelled, what never left will never leave.
CANCELLED_CAUSES = {
    Status.QUEUED: "Not sent: the blast was cancelled, so it never will be.",
    Status.SENDING: "Being sent when the blast was cancelled.",
}


def blast_stuck(blast_id: int, *, cancelled: bool = False) -> list[dict]:
    """Recipients by current status in funnel order, with their share and how long they have stood there.
    `cancelled`: the blast was cancelled, and the causes say so."""
    causes = PROBABLE_CAUSES | CANCELLED_CAUSES if cancelled else PROBABLE_CAUSES
    now = timezone.now()
    buckets = {}
    for label, young, old in AGE_BUCKETS:
        older = Q(status_changed_at__lte=now - young) if young else Q()  # the youngest takes clock skew too
        buckets[label] = Count("id", filter=older & Q(status_changed_at__gt=now - old) if old else older)
    rows = {
        row["status"]: row
        for row in audience(blast_id=blast_id)
        .order_by()
        .values("status")
        .annotate(count=Count("id"), **buckets)
    }
    total = sum(row["count"] for row in rows.values())
    result = []
    for status in FUNNEL_ORDER:
        row = rows.get(status, {})
        count = row.get("count", 0)
        result.append(
            {
                "status": status.name,
                "label": status.label,
                "probable_cause": causes[status],
                "follow_up": status.name in FOLLOW_UP_FROM,
                "count": count,
                "percent": round(100 * count / total, 1) if total else 0.0,
                "ages": {label: row.get(label, 0) for label, _, _ in AGE_BUCKETS},
            }
        )
    return result


@dataclass(frozen=True)
class Progress:
    sent: int  # reached the gateway (or failed, or unknown): done with; canaries included
    total: int
    per_minute: float | None  # over the time it has been sending: first send to last; None before two
    eta: datetime | None  # at that rate (by the device's pacing before there is one)


def blast_progress(blast: Blast) -> Progress:
    """How far sending is, how fast it has gone, and when it should end at that speed."""
    counts = blast.recipients.aggregate(
        total=Count("id"),
        waiting=Count("id", filter=Q(status__in=[Status.QUEUED, Status.SENDING])),
        sends=Count("sent_at"),
        first=Min("sent_at"),
        last=Max("sent_at"),
    )
    rate = None
    if counts["sends"] >= 2 and counts["last"] > counts["first"]:
        rate = (counts["sends"] - 1) / ((counts["last"] - counts["first"]).total_seconds() / 60)
    eta = blast_eta(blast)
    if eta and rate:
        eta = timezone.now() + timedelta(minutes=counts["waiting"] / rate)
    return Progress(counts["total"] - counts["waiting"], counts["total"], rate, eta)


def blast_canaries(blast_id: int) -> list[BlastRecipient]:
    """The team's canary phones in this blast, in send order: delivered ones prove the device sends."""
    return list(BlastRecipient.objects.filter(blast_id=blast_id, is_canary=True).order_by("id"))


# How long each kind of worker may stay silent before the status page calls it stale.
STALE_AFTER = {
    Heartbeat.Role.SENDER: timedelta(minutes=2),
    Heartbeat.Role.POLLER: timedelta(minutes=15),
    Heartbeat.Role.APPLIER: timedelta(minutes=2),
}


def workers_status(now: datetime | None = None) -> list[dict]:
    """Every worker seen in the last week, newest first per role, with whether it has gone quiet."""
    now = now or timezone.now()
    rows = Heartbeat.objects.filter(seen_at__gte=now - timedelta(days=7))
    return [
        {"heartbeat": beat, "ago": now - beat.seen_at, "stale": now - beat.seen_at > STALE_AFTER[beat.role]}
        for beat in rows
    ]


# An unapplied webhook event older than this means the applier is down or falling behind: an alert.
BACKLOG_ALERT_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class Backlog:
    count: int  # webhook events stored RECEIVED, not applied yet
    oldest_at: datetime | None  # when the oldest of them was received; None when there are none
    oldest_age: timedelta | None  # how long it has waited; None when there are none

    @property
    def alert(self) -> bool:
        """Whether the oldest has waited longer than BACKLOG_ALERT_AFTER."""
        return self.oldest_age is not None and self.oldest_age > BACKLOG_ALERT_AFTER


def webhook_backlog(now: datetime | None = None) -> Backlog:
    """How many webhook events wait for the applier and how old the oldest is, in one query
    (over the partial index of unapplied events)."""
    now = now or timezone.now()
    row = WebhookEvent.objects.filter(state=WebhookEvent.State.RECEIVED).aggregate(
        count=Count("id"), oldest_at=Min("received_at")
    )
    oldest_at = row["oldest_at"]
    # An event stamped a moment after `now` (clocks of two hosts) has waited no time, not a negative one.
    age = max(now - oldest_at, timedelta(0)) if oldest_at else None
    return Backlog(row["count"], oldest_at, age)


def health_report(now: datetime | None = None) -> dict:
    """For /healthz?deep=1, in two queries: each worker role's newest heartbeat and the webhook backlog.

    "status" is "unhealthy" when webhook events have waited past BACKLOG_ALERT_AFTER (delivery and read
    counts have stopped moving); a quiet worker is reported but not unhealthy by itself, as on the Status
    page (a sender with nothing to send, a poller run from cron). Worker names (host:pid) stay on the
    Status page, behind its login.
    """
    now = now or timezone.now()
    newest: dict[str, dict] = {}
    for row in workers_status(now):  # newest first within each role
        newest.setdefault(
            row["heartbeat"].role,
            {"seen_seconds_ago": int(row["ago"].total_seconds()), "stale": row["stale"]},
        )
    backlog = webhook_backlog(now)
    return {
        "status": "unhealthy" if backlog.alert else "ok",
        "workers": {role: newest.get(role) for role in Heartbeat.Role.values},  # None: none in a week
        "backlog": {
            "count": backlog.count,
            "oldest_age_seconds": int(backlog.oldest_age.total_seconds()) if backlog.oldest_age else None,
            "alert_after_seconds": int(BACKLOG_ALERT_AFTER.total_seconds()),
            "alert": backlog.alert,
        },
    }


def blast_filter_choices() -> dict[str, list[str]]:
    """The tags and follow-up stages there are, for the filters to offer (newest blasts' first)."""
    recent = list(Blast.objects.order_by("-created_at").values_list("tag", "follow_up_stage")[:1000])
    return {
        "tag_choices": sorted({tag for tag, _ in recent}, key=str.lower),
        "stage_choices": sorted({stage for _, stage in recent}, key=str.lower),
    }


def tags_like(tag: str) -> list[str]:
    """Tags that contain `tag` in any case: for a tag filter that found nothing."""
    return sorted(set(Blast.objects.filter(tag__icontains=tag.strip()).values_list("tag", flat=True)[:20]))[
        :5
    ]
