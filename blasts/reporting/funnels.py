"""Funnels: how many recipients reached each stage, per blast, per group of blasts and per day.

Every count of a stage comes from here; statuses.py says where each stage starts.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from ..models import BlastRecipient
from ..statuses import FUNNEL_ORDER
from .stats import Rate

Status = BlastRecipient.Status


def audience(**filters):
    """Recipients that count in rates: everyone but the team's canary phones."""
    return BlastRecipient.objects.filter(is_canary=False, **filters)


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
    def done(self) -> int:
        """No longer waiting to be sent: sent, failed, unknown or skipped."""
        return self.total - self.not_sent

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

    def steps(self) -> list[dict]:
        """The funnel left to right: each stage's count, share of sent, conversion from the stage before, drop-off."""
        steps, previous = [], None
        for stage, count in self.stages().items():
            steps.append(
                {
                    "stage": stage,
                    "count": count,
                    "percent": round(100 * count / self.sent) if self.sent else 0,  # of sent
                    "conversion": round(100 * count / previous) if previous else None,  # of the stage before
                    "drop": previous - count if previous is not None else None,
                }
            )
            previous = count
        return steps

    def rate(self, stage: str) -> Rate:
        """A stage ("received", "read", "replied", "closed") as a share of sent, for intervals."""
        return Rate(self.stages()[stage], self.sent)

    def stuck(self) -> list[tuple[Status, int]]:
        """How many recipients stand at each status now, in funnel order."""
        return [(s, self.by_status.get(s, 0)) for s in FUNNEL_ORDER]


def blast_funnels(blast_ids: Iterable[int]) -> dict[int, Funnel]:
    """Funnels for many blasts in one query (a blast with no recipients gets an empty funnel)."""
    ids = list(blast_ids)
    counts: dict[int, dict[int, int]] = defaultdict(dict)
    rows = audience(blast_id__in=ids).order_by().values_list("blast_id", "status").annotate(n=Count("id"))
    for blast_id, status, n in rows:
        counts[blast_id][status] = n
    return {blast_id: Funnel(counts[blast_id]) for blast_id in ids}


def blast_funnel(blast_id: int) -> Funnel:
    return blast_funnels([blast_id])[blast_id]


def blast_variant_funnels(blast_id: int, letters: Iterable[str]) -> dict[str, Funnel]:
    """One blast's funnel per variant (each of `letters`, in order, even one nobody got), in one query."""
    counts: dict[str, dict[int, int]] = defaultdict(dict)
    rows = audience(blast_id=blast_id).order_by().values_list("variant", "status").annotate(n=Count("id"))
    for variant, status, n in rows:
        counts[variant][status] = n
    return {letter: Funnel(counts[letter]) for letter in letters}


@dataclass(frozen=True)
class FunnelBreakdown:
    """Recipients of a set of blasts counted by status per (tag, follow-up stage), and the sums."""

    cells: Mapping[tuple[str, str], Mapping[int, int]]

    @property
    def total(self) -> Funnel:
        return _funnel_sum(self.cells.values())

    def by(self, field: str) -> dict[str, Funnel]:
        """Funnels per "tag" or per "follow_up_stage", sorted by value."""
        index = ("tag", "follow_up_stage").index(field)
        grouped = defaultdict(list)
        for key, counts in self.cells.items():
            grouped[key[index]].append(counts)
        return {value: _funnel_sum(grouped[value]) for value in sorted(grouped)}


def _funnel_sum(counts: Iterable[Mapping[int, int]]) -> Funnel:
    total: dict[int, int] = defaultdict(int)
    for by_status in counts:
        for status, n in by_status.items():
            total[status] += n
    return Funnel(dict(total))


# On PostgreSQL each blast's recipients are counted from the (blast, status, is_canary) index
# alone, then the ~10 rows a blast are summed: joining a million recipients to the filtered blasts
# row by row took 5 times longer. SQLite has no LATERAL; it runs the plain query.
BREAKDOWN_SQL = """
    SELECT b.tag, b.follow_up_stage, c.status, SUM(c.n)::bigint
    FROM ({blasts}) AS b CROSS JOIN LATERAL (
        SELECT status, COUNT(*) AS n FROM blasts_blastrecipient
        WHERE blast_id = b.id AND NOT is_canary  -- audience(): the canaries left out
        GROUP BY status
    ) AS c
    GROUP BY b.tag, b.follow_up_stage, c.status
"""


def _over_blasts(sql: str, blasts) -> list[tuple]:
    """The rows of `sql` with the blasts' query (their `values()`) as its {blasts}; none for no blasts."""
    try:
        inner, params = blasts.order_by().query.get_compiler(blasts.db).as_sql()
    except EmptyResultSet:  # blasts.none(), as a bad filter gives
        return []
    with connections[blasts.db].cursor() as cursor:
        cursor.execute(sql.format(blasts=inner), params)
        return cursor.fetchall()


def blasts_funnel_breakdown(blasts) -> FunnelBreakdown:
    """Funnels of the given blasts (a queryset) per (tag, follow-up stage), in one query."""
    if connections[blasts.db].vendor == "postgresql":
        rows = _over_blasts(BREAKDOWN_SQL, blasts.values("id", "tag", "follow_up_stage"))
    else:
        rows = (
            audience(blast__in=blasts.order_by().values("pk"))
            .order_by()
            .values_list("blast__tag", "blast__follow_up_stage", "status")
            .annotate(n=Count("*"))
        )
    cells: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for tag, stage, status, n in rows:
        cells[tag, stage][status] = n
    return FunnelBreakdown(dict(cells))


# blasts_funnel_breakdown per blast: each blast's recipients counted from the index alone, as there.
BY_BLAST_SQL = """
    SELECT b.id, c.status, c.n
    FROM ({blasts}) AS b CROSS JOIN LATERAL (
        SELECT status, COUNT(*) AS n FROM blasts_blastrecipient
        WHERE blast_id = b.id AND NOT is_canary  -- audience(): the canaries left out
        GROUP BY status
    ) AS c
"""


def blasts_status_counts(blasts) -> dict[int, dict[int, int]]:
    """Each of the given blasts' (a queryset) recipients counted by status, in one query (no recipients: left out)."""
    if connections[blasts.db].vendor == "postgresql":
        rows = _over_blasts(BY_BLAST_SQL, blasts.values("id"))
    else:
        rows = (
            audience(blast__in=blasts.order_by().values("pk"))
            .order_by()
            .values_list("blast_id", "status")
            .annotate(n=Count("*"))
        )
    counts: dict[int, dict[int, int]] = defaultdict(dict)
    for blast_id, status, n in rows:
        counts[blast_id][status] = n
    return dict(counts)


def blasts_funnel_total(blasts) -> Funnel:
    """One funnel over every recipient of the given blasts (a queryset), in one query."""
    return blasts_funnel_breakdown(blasts).total


def blasts_daily(blasts) -> list[dict]:
    """Per day sent (local time): how many were sent, and how many of those reached each stage.

    Sent as the funnel counts it: on the ladder now (a message the gateway took and WhatsApp then
    refused is failed, not sent), on the day it went out."""
    stages = {
        "received": Q(status__gte=Status.DELIVERY_ACK),
        "read": Q(status__gte=Status.READ_ACK),
        "replied": Q(status__gte=Status.REPLIED),
    }
    rows = (
        audience(blast__in=blasts.order_by().values("pk"), sent_at__isnull=False, status__gte=Status.PENDING)
        .annotate(day=TruncDate("sent_at", tzinfo=timezone.get_current_timezone()))
        .order_by()  # sorted here: with ORDER BY PostgreSQL sorts every recipient to group them
        .values("day")
        .annotate(sent=Count("id"), **{name: Count("id", filter=q) for name, q in stages.items()})
    )
    return sorted(rows, key=lambda row: row["day"])
