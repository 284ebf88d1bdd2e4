"""The overview from rollups: one row a blast (BlastRollup) with its per-day counts and timing histograms.

A rollup holds while its blast's status counts (canaries left out) still equal the ones it stored.
The ledger only moves a recipient forward (statuses.can_move) and sets a stage's time only with the
status that reaches it, so any change to a sent recipient, its day or its times changes those counts
for good: a rollup whose counts still match is exact. The overview counts every blast live from the
(blast, status, is_canary) index (that is its funnel, as blasts_funnel_breakdown counts it), takes
the rest from the rollups that still match, and computes the other blasts' rows live.

Percentiles come from histograms with 4 buckets per doubling of the time from sent, so they are
approximate: within half a bucket (about 9 %) for waits of 1 s or more.
"""

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import DurationField, ExpressionWrapper, F
from django.db.models.functions import TruncDate
from django.utils import timezone

from ..models import Blast, BlastRecipient, BlastRollup
from ..statuses import ACTIVE
from .funnels import Funnel, FunnelBreakdown, audience, blasts_status_counts
from .timing import TIMED_STAGES, StageTiming

BUCKETS_PER_DOUBLING = 4
BUCKETS = 100  # bucket 0: under 1 s (clock skew too); the last: 2^24.5 s (about 280 days) and more
REFRESH_BATCH = 50  # blasts computed a query
REFRESH_EVERY_SECONDS = 60  # the poller's passes are 5 s apart; checking every blast's counts takes ~70 ms
Status = BlastRecipient.Status


def bucket_of(seconds: float) -> int:
    """The histogram bucket of a wait: 0 under 1 s, then k for [2^((k-1)/4), 2^(k/4)) seconds."""
    if seconds < 1:
        return 0
    return min(1 + math.floor(BUCKETS_PER_DOUBLING * math.log2(seconds)), BUCKETS - 1)


def _bucket_value(index: int) -> float:
    """The seconds a bucket stands for: its geometric middle (the last: where it starts)."""
    if index == 0:
        return 0.5
    if index == BUCKETS - 1:
        return 2 ** ((index - 1) / BUCKETS_PER_DOUBLING)
    return 2 ** ((index - 0.5) / BUCKETS_PER_DOUBLING)


def _ranked(histogram: list[int], rank: int) -> float:
    """The value of the rank-th smallest wait (1-based), as its bucket's value."""
    seen = 0
    for index, n in enumerate(histogram):
        seen += n
        if seen >= rank:
            return _bucket_value(index)
    raise ValueError(f"rank {rank} beyond {seen} values")


def histogram_timing(stage: str, histogram: list[int]) -> StageTiming:
    """Count, median (the two middle values averaged, as percentile_cont) and nearest-rank p90 of a histogram."""
    n = sum(histogram)
    if not n:
        return StageTiming(stage, 0, None, None, None)
    median = (_ranked(histogram, (n + 1) // 2) + _ranked(histogram, n // 2 + 1)) / 2
    p90 = _ranked(histogram, max(math.ceil(0.9 * n), 1))
    return StageTiming(stage, n, timedelta(seconds=median), timedelta(seconds=p90), None)


def _time_zone() -> str:
    return str(timezone.get_current_timezone())


def _blasts_compute(blast_ids: list[int]) -> dict[int, dict]:
    """Each blast's daily counts and timing histograms, live, from one query over its sent recipients.

    Days and stages as blasts_daily and blasts_timings_by count them: per local day sent, the sent
    still on the ladder by status (Funnel counts the stages); every time from sent, per stage."""
    result = {
        blast_id: {
            "daily": defaultdict(lambda: defaultdict(int)),
            "sent": 0,
            "hist": [[0] * BUCKETS for _ in TIMED_STAGES],
        }
        for blast_id in blast_ids
    }
    if not blast_ids:
        return {}
    # Waits as intervals, not the times: a time zone-aware datetime costs several times more to load.
    waits = {
        f"wait_{at}": ExpressionWrapper(F(at) - F("sent_at"), output_field=DurationField())
        for _, at, _ in TIMED_STAGES
    }
    rows = (
        audience(blast_id__in=blast_ids, sent_at__isnull=False)
        .annotate(day=TruncDate("sent_at", tzinfo=timezone.get_current_timezone()), **waits)
        .order_by()
        .values_list("blast_id", "status", "day", *waits)
    )
    for blast_id, status, day, *times in rows:
        blast = result[blast_id]
        blast["sent"] += 1
        if status >= Status.PENDING:  # sent as the funnel counts it: still on the ladder
            blast["daily"][day.isoformat()][str(status)] += 1
        for histogram, at in zip(blast["hist"], times, strict=True):
            if at is not None:
                histogram[bucket_of(at.total_seconds())] += 1
    return {
        blast_id: {
            "daily": {day: dict(by_status) for day, by_status in data["daily"].items()},
            "timings": {"sent": data["sent"], "histograms": [_trimmed(h) for h in data["hist"]]},
        }
        for blast_id, data in result.items()
    }


def _trimmed(histogram: list[int]) -> list[int]:
    """A histogram without its empty ends, as [index of its first bucket, counts...]: a third the size."""
    filled = [index for index, n in enumerate(histogram) if n]
    return [filled[0], *histogram[filled[0] : filled[-1] + 1]] if filled else [0]


def _stale(blast_counts: dict[int, dict[int, int]], rollups: dict[int, tuple], zone: str) -> list[int]:
    """The blasts whose rollup is missing, counted days in another zone, or no longer matches their counts."""
    return [
        blast_id
        for blast_id, counts in blast_counts.items()
        if blast_id not in rollups or rollups[blast_id][0] != zone or rollups[blast_id][1] != _keyed(counts)
    ]


def _keyed(counts: dict[int, int]) -> dict[str, int]:
    return {str(status): n for status, n in counts.items()}


def rollups_refresh(*, limit: int = 100) -> int:
    """Compute the rollups that are missing or no longer match, for blasts not sending now; return how many.

    The counts are read before the rows the rollup is computed from: a change in between makes the
    stored counts differ from every later count, so such a rollup is never used."""
    zone = _time_zone()
    settled = Blast.objects.exclude(state__in=ACTIVE)
    counts = blasts_status_counts(settled)
    rollups = {
        blast_id: (time_zone, stored)
        for blast_id, time_zone, stored in BlastRollup.objects.filter(blast__in=settled).values_list(
            "blast_id", "time_zone", "counts"
        )
    }
    stale = _stale(counts, rollups, zone)[:limit]
    now = timezone.now()
    for start in range(0, len(stale), REFRESH_BATCH):
        ids = stale[start : start + REFRESH_BATCH]
        computed = _blasts_compute(ids)
        fresh = [
            BlastRollup(
                blast_id=blast_id,
                computed_at=now,
                time_zone=zone,
                counts=_keyed(counts[blast_id]),
                **computed[blast_id],
            )
            for blast_id in ids
        ]
        BlastRollup.objects.bulk_create(  # upserted: two pollers may refresh the same blast
            fresh,
            update_conflicts=True,
            unique_fields=["blast"],
            update_fields=["computed_at", "time_zone", "counts", "daily", "timings"],
        )
    return len(stale)


_last_refresh: float | None = None


def rollups_refresh_due() -> int:
    """rollups_refresh at most once a minute in this process (the poller calls it on every pass)."""
    global _last_refresh
    if _last_refresh is not None and time.monotonic() - _last_refresh < REFRESH_EVERY_SECONDS:
        return 0
    _last_refresh = time.monotonic()
    return rollups_refresh()


@dataclass(frozen=True)
class Overview:
    """The overview's numbers over a set of blasts; `live` blasts were computed from their recipients."""

    breakdown: FunnelBreakdown
    daily: list[dict]
    stage_timings: dict[str, list[StageTiming]]
    live: int


def blasts_overview(blasts) -> Overview:
    """The funnels by (tag, follow-up stage), per day sent and timings by follow-up stage of the given
    blasts (a queryset): counts exact, from the index and the rollups that still match; percentiles
    approximate (histograms)."""
    counts = blasts_status_counts(blasts)
    rows = blasts.order_by().values_list(
        "id",
        "tag",
        "follow_up_stage",
        "rollup__time_zone",
        "rollup__counts",
        "rollup__daily",
        "rollup__timings",
    )
    zone = _time_zone()
    blast_rows = {row[0]: row for row in rows if row[0] in counts}
    rollups = {blast_id: (row[3], row[4]) for blast_id, row in blast_rows.items() if row[3] is not None}
    stale = _stale(counts, rollups, zone)
    live = _blasts_compute(stale)
    cells: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    days: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    sent: dict[str, int] = defaultdict(int)
    histograms: dict[str, list[list[int]]] = defaultdict(list)
    for blast_id, (_, tag, stage, _, _, daily, timings) in blast_rows.items():
        if blast_id in live:
            daily, timings = live[blast_id]["daily"], live[blast_id]["timings"]
        cell = cells[tag, stage]
        for status, n in counts[blast_id].items():
            cell[status] += n
        for day, by_status in daily.items():
            for status, n in by_status.items():
                days[day][int(status)] += n
        if timings["sent"]:
            sent[stage] += timings["sent"]
            histograms[stage].append(timings["histograms"])
    return Overview(
        breakdown=FunnelBreakdown({key: dict(by_status) for key, by_status in cells.items()}),
        daily=[_day(day, days[day]) for day in sorted(days)],
        stage_timings={stage: _stage_timings(histograms[stage]) for stage in sorted(sent)},
        live=len(stale),
    )


def _day(day: str, by_status: dict[int, int]) -> dict:
    funnel = Funnel(dict(by_status))
    return {"day": date.fromisoformat(day), "sent": funnel.sent, "received": funnel.received,
            "read": funnel.read, "replied": funnel.replied}  # fmt: skip


def _stage_timings(per_blast: Iterable[list[list[int]]]) -> list[StageTiming]:
    """Each timed stage's (trimmed) histograms summed over the blasts, then read as a StageTiming."""
    summed = [[0] * BUCKETS for _ in TIMED_STAGES]
    for histograms in per_blast:
        for total, (first, *counts) in zip(summed, histograms, strict=True):
            for index, n in enumerate(counts, start=first):
                total[index] += n
    return [
        histogram_timing(stage, histogram)
        for (stage, _, _), histogram in zip(TIMED_STAGES, summed, strict=True)
    ]
