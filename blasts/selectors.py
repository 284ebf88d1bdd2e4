"""Named reads: funnel counts and the lists that pages, the API and commands show."""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count
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
