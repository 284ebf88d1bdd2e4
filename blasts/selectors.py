"""Named reads: funnel counts and the lists that pages, the API and commands show."""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from .models import Blast, BlastRecipient
from .pacing import device_finish_time
from .statuses import FUNNEL_ORDER

Status = BlastRecipient.Status


@dataclass(frozen=True)
class Funnel:
    """Recipients of one blast (or several) counted by current status.

    The stages are cumulative: a replied recipient also counts as read, received and sent.
    Received means DELIVERY_ACK or later (SERVER_ACK only reached WhatsApp's server).
    """

    by_status: Mapping[int, int] = field(default_factory=dict)

    def _at_least(self, status: Status) -> int:
        return sum(n for s, n in self.by_status.items() if s >= status)

    def _at(self, *statuses: Status) -> int:
        return sum(self.by_status.get(s, 0) for s in statuses)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def sent(self) -> int:
        return self._at_least(Status.PENDING)

    @property
    def received(self) -> int:
        return self._at_least(Status.DELIVERY_ACK)

    @property
    def read(self) -> int:
        return self._at_least(Status.READ_ACK)

    @property
    def replied(self) -> int:
        return self._at_least(Status.REPLIED)

    @property
    def closed(self) -> int:
        return self._at_least(Status.CLOSED)

    @property
    def not_sent(self) -> int:
        return self._at(Status.QUEUED, Status.SENDING)

    @property
    def failed(self) -> int:
        return self._at(Status.FAILED)

    @property
    def unknown(self) -> int:
        return self._at(Status.UNKNOWN)

    @property
    def skipped(self) -> int:
        return self._at(Status.SKIPPED)

    def stages(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "received": self.received,
            "read": self.read,
            "replied": self.replied,
            "closed": self.closed,
        }

    def metrics(self) -> dict:
        """The roadmap's five counts, the rest apart, and each stage's rate of sent."""
        stages = self.stages()
        return {
            **stages,
            "failed": self.failed,
            "unknown": self.unknown,
            "skipped": self.skipped,
            "queued": self.not_sent,
            "total": self.total,
            "rates": {
                stage: round(n / self.sent, 4) if self.sent else 0.0
                for stage, n in stages.items()
                if stage != "sent"
            },
        }

    def stuck(self) -> list[tuple[Status, int]]:
        """How many recipients stand at each status now, in funnel order."""
        return [(s, self.by_status.get(s, 0)) for s in FUNNEL_ORDER]


def blast_funnels(blast_ids: Iterable[int]) -> dict[int, Funnel]:
    """Funnels for many blasts in one query (a blast with no recipients gets an empty funnel)."""
    ids = list(blast_ids)
    counts: dict[int, dict[int, int]] = defaultdict(dict)
    rows = (
        BlastRecipient.objects.filter(blast_id__in=ids)
        .order_by()
        .values_list("blast_id", "status")
        .annotate(n=Count("id"))
    )
    for blast_id, status, n in rows:
        counts[blast_id][status] = n
    return {blast_id: Funnel(counts[blast_id]) for blast_id in ids}


def blast_funnel(blast_id: int) -> Funnel:
    return blast_funnels([blast_id])[blast_id]


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
        blast__state__in=[Blast.State.QUEUED, Blast.State.SENDING],
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


def blast_stuck(blast_id: int) -> list[dict]:
    """Recipients by current status in funnel order, with their share and how long they have stood there."""
    now = timezone.now()
    buckets = {}
    for label, young, old in AGE_BUCKETS:
        older = Q(status_changed_at__lte=now - young) if young else Q()  # the youngest takes clock skew too
        buckets[label] = Count("id", filter=older & Q(status_changed_at__gt=now - old) if old else older)
    rows = {
        row["status"]: row
        for row in BlastRecipient.objects.filter(blast_id=blast_id)
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
                "count": count,
                "percent": round(100 * count / total, 1) if total else 0.0,
                "ages": {label: row.get(label, 0) for label, _, _ in AGE_BUCKETS},
            }
        )
    return result
