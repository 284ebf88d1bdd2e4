"""Time between stages: percentiles (in SQL on PostgreSQL), by stage or group, and the reply curve."""

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.db import connections
from django.db.models import Aggregate, Count, Exists, F, FloatField, Func, OuterRef, Q

from ..models import BlastRecipient, StatusHistory
from .funnels import audience

Status = BlastRecipient.Status


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
