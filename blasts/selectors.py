"""Named reads: funnel counts and the lists that pages, the API and commands show."""

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import Aggregate, Count, Exists, F, FloatField, Func, OuterRef, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import Blast, BlastRecipient, Heartbeat, StatusHistory
from .pacing import device_finish_time
from .stats import Difference, Rate
from .statuses import ACTIVE, FOLLOW_UP_FROM, FUNNEL_ORDER

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


def blast_stuck(blast_id: int) -> list[dict]:
    """Recipients by current status in funnel order, with their share and how long they have stood there."""
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
                "probable_cause": PROBABLE_CAUSES[status],
                "follow_up": status in FOLLOW_UP_FROM,
                "count": count,
                "percent": round(100 * count / total, 1) if total else 0.0,
                "ages": {label: row.get(label, 0) for label, _, _ in AGE_BUCKETS},
            }
        )
    return result


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


def blasts_funnel_breakdown(blasts) -> FunnelBreakdown:
    """Funnels of the given blasts (a queryset) per (tag, follow-up stage), in one query."""
    connection = connections[blasts.db]
    if connection.vendor == "postgresql":
        try:
            sql, params = (
                blasts.order_by()
                .values("id", "tag", "follow_up_stage")
                .query.get_compiler(blasts.db)
                .as_sql()
            )
        except EmptyResultSet:  # blasts.none(), as a bad filter gives
            return FunnelBreakdown({})
        with connection.cursor() as cursor:
            cursor.execute(BREAKDOWN_SQL.format(blasts=sql), params)
            rows = cursor.fetchall()
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


def blasts_funnel_total(blasts) -> Funnel:
    """One funnel over every recipient of the given blasts (a queryset), in one query."""
    return blasts_funnel_breakdown(blasts).total


def blasts_daily(blasts) -> list[dict]:
    """Per day sent (local time): how many were sent, and how many of those reached each stage."""
    stages = {
        "received": Q(status__gte=Status.DELIVERY_ACK),
        "read": Q(status__gte=Status.READ_ACK),
        "replied": Q(status__gte=Status.REPLIED),
    }
    rows = (
        audience(blast__in=blasts.order_by().values("pk"), sent_at__isnull=False)
        .annotate(day=TruncDate("sent_at", tzinfo=timezone.get_current_timezone()))
        .order_by()  # sorted here: with ORDER BY PostgreSQL sorts every recipient to group them
        .values("day")
        .annotate(sent=Count("id"), **{name: Count("id", filter=q) for name, q in stages.items()})
    )
    return sorted(rows, key=lambda row: row["day"])


@dataclass(frozen=True)
class Progress:
    sent: int  # reached the gateway (or failed, or unknown): done with; canaries included
    total: int
    per_minute: float  # over the last five minutes
    eta: datetime | None


def blast_progress(blast: Blast) -> Progress:
    """How far sending is, how fast it goes, and when it should end."""
    counts = blast.recipients.aggregate(
        total=Count("id"),
        waiting=Count("id", filter=Q(status__in=[Status.QUEUED, Status.SENDING])),
        recent=Count("id", filter=Q(sent_at__gte=timezone.now() - timedelta(minutes=5))),
    )
    return Progress(
        counts["total"] - counts["waiting"], counts["total"], counts["recent"] / 5, blast_eta(blast)
    )


def blast_canaries(blast_id: int) -> list[BlastRecipient]:
    """The team's canary phones in this blast, in send order: delivered ones prove the device sends."""
    return list(BlastRecipient.objects.filter(blast_id=blast_id, is_canary=True).order_by("id"))


# Stages timed from the send, and the status whose history rows may carry the gateway's own time.
TIMED_STAGES = (
    ("server ack", "server_ack_at", Status.SERVER_ACK),
    ("delivered", "delivered_at", Status.DELIVERY_ACK),
    ("read", "read_at", Status.READ_ACK),
    ("replied", "replied_at", Status.REPLIED),
)
REPLY_CURVE_HOURS = (1, 4, 24, 72)


@dataclass(frozen=True)
class StageTiming:
    stage: str
    count: int  # recipients that reached the stage (with a send time)
    median: timedelta | None
    p90: timedelta | None
    # How many of those times are the gateway's own (the rest are ours); None: not counted.
    gateway_times: int | None


def _percentile(sorted_values: list, fraction: float):
    """Nearest-rank percentile: the smallest value with at least `fraction` of the values at or below it."""
    if not sorted_values:
        return None
    return sorted_values[max(math.ceil(fraction * len(sorted_values)) - 1, 0)]


class PercentileCont(Aggregate):
    """PostgreSQL's interpolated percentile: PercentileCont(x, fraction=0.5) is statistics.median."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


class PercentileDisc(PercentileCont):
    """PostgreSQL's nearest-rank percentile, as _percentile (both take the ceil(fraction * n)-th value)."""

    function = "percentile_disc"


class Microseconds(Func):
    """PostgreSQL: a duration as its whole number of microseconds, a float.

    Floats sort much faster than intervals and a month's sends fit work_mem, so nothing spills
    to disk; whole microseconds keep the median exact ((a + b) / 2 as Python rounds it)."""

    template = "round(date_part('epoch', %(expressions)s) * 1000000)"
    output_field = FloatField()


def _as_duration(microseconds: float | None) -> timedelta | None:
    return None if microseconds is None else timedelta(microseconds=microseconds)


def blast_timings(blast_ids) -> list[StageTiming]:
    """Median and p90 time from sending to each stage, over the given blasts."""
    empty = [StageTiming(stage, 0, None, None, 0) for stage, _, _ in TIMED_STAGES]
    return blasts_timings_by(audience(blast_id__in=list(blast_ids))).get("", empty)


def blasts_timings_by_stage(blasts) -> dict[str, list[StageTiming]]:
    """blast_timings per follow-up stage of the given blasts (a queryset): Initial, Follow-up 1, …

    Without the gateway's share (gateway_times is None): the overview does not show it, and counting
    it joins every history row of the blasts."""
    recipients = audience(blast__in=blasts.order_by().values("pk"))
    return blasts_timings_by(recipients, "blast__follow_up_stage", gateway=False)


def blasts_timings_by(recipients, group: str = "", *, gateway: bool = True) -> dict[str, list[StageTiming]]:
    """Timings of the sent among `recipients` per value of a recipient field (none: all under "").

    One query, and one more for how many times are the gateway's own when `gateway`."""
    sent = recipients.filter(sent_at__isnull=False).order_by()
    if connections[sent.db].vendor == "postgresql":
        stats = _durations_in_sql(sent, group)
    else:  # SQLite has no percentile function
        stats = _durations_in_python(sent, group)
    counts: dict[str, dict[int, int]] = defaultdict(dict)
    if gateway:
        history = StatusHistory.objects.filter(recipient__in=sent, occurred_at__isnull=False).order_by()
        grouping = [f"recipient__{group}"] if group else []
        for row in history.values_list(*grouping, "to_status").annotate(n=Count("id")):
            counts[row[0] if group else ""][row[-2]] = row[-1]
    return {
        value: [
            StageTiming(stage, *stats[value][stage], counts[value].get(status, 0) if gateway else None)
            for stage, _, status in TIMED_STAGES
        ]
        for value in sorted(stats)
    }


def _durations_in_sql(sent, group: str) -> dict[str, dict[str, tuple]]:
    """(count, median, p90) of each stage's time from sending, per group value, computed by PostgreSQL."""
    aggregates = {"sent_n": Count("*")}
    for _, at, _ in TIMED_STAGES:
        duration = Microseconds(F(at) - F("sent_at"))
        aggregates[f"{at}_n"] = Count(at)
        aggregates[f"{at}_median"] = PercentileCont(duration, fraction=0.5)
        aggregates[f"{at}_p90"] = PercentileDisc(duration, fraction=0.9)
    rows = sent.values(group).annotate(**aggregates) if group else [sent.aggregate(**aggregates)]
    return {
        row[group] if group else "": {
            stage: (row[f"{at}_n"], _as_duration(row[f"{at}_median"]), _as_duration(row[f"{at}_p90"]))
            for stage, at, _ in TIMED_STAGES
        }
        for row in rows
        if row["sent_n"]
    }


def _durations_in_python(sent, group: str) -> dict[str, dict[str, tuple]]:
    """What _durations_in_sql computes, from every sent recipient's times."""
    rows = defaultdict(list)
    for row in sent.values_list(*([group] if group else []), "sent_at", *(at for _, at, _ in TIMED_STAGES)):
        rows[row[0] if group else ""].append(row[1:] if group else row)
    stats = {}
    for value, times in rows.items():
        stats[value] = {}
        for index, (stage, _, _) in enumerate(TIMED_STAGES, start=1):
            durations = sorted(row[index] - row[0] for row in times if row[index] is not None)
            median = statistics.median(durations) if durations else None
            stats[value][stage] = (len(durations), median, _percentile(durations, 0.9))
    return stats


def blast_reply_curve(blast_ids) -> list[tuple[int, float]]:
    """Share of sent recipients that replied within 1, 4, 24 and 72 hours of their send."""
    sent = audience(blast_id__in=list(blast_ids), sent_at__isnull=False)
    rows = list(sent.values_list("sent_at", "replied_at"))
    waits = [replied - sent_at for sent_at, replied in rows if replied]
    return [
        (hours, sum(wait <= timedelta(hours=hours) for wait in waits) / len(rows) if rows else 0.0)
        for hours in REPLY_CURVE_HOURS
    ]


def blast_read_split(blast_id: int) -> tuple[int, int]:
    """Read recipients split by how we know: a read receipt came, or only a reply proved it."""
    receipts = StatusHistory.objects.filter(recipient=OuterRef("pk"), to_status=Status.READ_ACK)
    read = audience(blast_id=blast_id, status__gte=Status.READ_ACK)
    counts = read.aggregate(total=Count("pk"), receipts=Count("pk", filter=Q(Exists(receipts))))
    return counts["receipts"], counts["total"] - counts["receipts"]


COMPARED_STAGES = ("received", "read", "replied", "closed")


def funnels_compare(a: Funnel, b: Funnel) -> list[dict]:
    """Each stage's rate of sent on both sides with 95% intervals, and whether b - a is beyond noise."""
    return [
        {
            "stage": stage,
            "a": a.rate(stage),
            "b": b.rate(stage),
            "difference": Difference(a.rate(stage), b.rate(stage)),
        }
        for stage in COMPARED_STAGES
    ]


COMPARABLE = {"blast": "Blast", "tag": "Tag", "stage": "Follow-up stage"}


def comparable_funnel(key: str) -> tuple[str, Funnel]:
    """("Tag: Promo", its funnel) for "tag:Promo"; also "blast:12" and "stage:Follow-up 1".

    Raises ValueError for a key that names nothing."""
    kind, _, value = key.partition(":")
    if (
        kind == "blast"
        and value.isascii()
        and value.isdigit()
        and (blast := Blast.objects.filter(pk=value).first())
    ):
        return (
            f"{blast.tag} ({blast.follow_up_stage}, {blast.created_at:%Y-%m-%d}) #{blast.pk}",
            blast_funnel(blast.pk),
        )
    field = {"tag": "tag", "stage": "follow_up_stage"}.get(kind)
    if field and value and (blasts := Blast.objects.filter(**{field: value})).exists():
        return f"{COMPARABLE[kind]}: {value}", blasts_funnel_total(blasts)
    raise ValueError(f"{key!r} is not a blast, tag or follow-up stage here.")


def comparable_choices(recent_blasts: int = 100) -> list[tuple[str, list[tuple[str, str]]]]:
    """What the compare page offers: tags, follow-up stages and the most recent blasts, grouped."""
    values = Blast.objects.order_by()
    tags = values.values_list("tag", flat=True).distinct().order_by("tag")
    stages = values.values_list("follow_up_stage", flat=True).distinct().order_by("follow_up_stage")
    blasts = Blast.objects.order_by("-created_at", "-id")[:recent_blasts]
    return [
        ("Tags", [(f"tag:{tag}", tag) for tag in tags]),
        ("Follow-up stages", [(f"stage:{stage}", stage) for stage in stages]),
        (
            "Blasts",
            [
                (f"blast:{b.pk}", f"#{b.pk} {b.tag} ({b.follow_up_stage}, {b.created_at:%Y-%m-%d})")
                for b in blasts
            ],
        ),
    ]


@dataclass(frozen=True)
class SequenceStep:
    stage: str
    blasts: list[Blast]
    funnel: Funnel  # this step's own recipients
    replied_so_far: int  # people of the first blast who replied to it or to any step up to this one
    closed_so_far: int
    timings: list[StageTiming]


def blast_sequence(blast: Blast) -> tuple[Blast, int, list[SequenceStep]]:
    """The blast's family from its first blast down: Initial → Follow-up 1 → Follow-up 2 …

    Returns the first blast, how many of its recipients were sent the message (the base of the
    cumulative rates), and one step per generation of follow-ups (siblings share a step).
    """
    root = blast
    while root.parent_id:
        root = Blast.objects.get(pk=root.parent_id)
    generations = [[root]]
    while children := list(Blast.objects.filter(parent__in=generations[-1]).order_by("created_at", "id")):
        generations.append(children)
    ids = [b.pk for generation in generations for b in generation]
    rows = defaultdict(list)
    for blast_id, phone, status in audience(blast_id__in=ids).values_list("blast_id", "phone", "status"):
        rows[blast_id].append((phone, status))
    funnels = blast_funnels(ids)
    replied, closed, steps = set(), set(), []
    for generation in generations:
        for b in generation:
            replied.update(phone for phone, status in rows[b.pk] if status >= Status.REPLIED)
            closed.update(phone for phone, status in rows[b.pk] if status >= Status.CLOSED)
        counts = defaultdict(int)
        for b in generation:
            for status, n in funnels[b.pk].by_status.items():
                counts[status] += n
        steps.append(
            SequenceStep(
                stage=" / ".join(dict.fromkeys(b.follow_up_stage for b in generation)),
                blasts=generation,
                funnel=Funnel(dict(counts)),
                replied_so_far=len(replied),
                closed_so_far=len(closed),
                timings=blast_timings(b.pk for b in generation),
            )
        )
    return root, funnels[root.pk].sent, steps


# How long each kind of worker may stay silent before the status page calls it stale.
STALE_AFTER = {Heartbeat.Role.SENDER: timedelta(minutes=2), Heartbeat.Role.POLLER: timedelta(minutes=15)}


def workers_status(now: datetime | None = None) -> list[dict]:
    """Every worker seen in the last week, newest first per role, with whether it has gone quiet."""
    now = now or timezone.now()
    rows = Heartbeat.objects.filter(seen_at__gte=now - timedelta(days=7))
    return [
        {"heartbeat": beat, "ago": now - beat.seen_at, "stale": now - beat.seen_at > STALE_AFTER[beat.role]}
        for beat in rows
    ]
