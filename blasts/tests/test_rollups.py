"""The overview from rollups equals the exact computation: counts exactly, percentiles within a bucket."""

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from blasts.models import Blast, BlastRecipient, BlastRollup, StatusHistory
from blasts.reporting.funnels import blasts_daily, blasts_funnel_breakdown
from blasts.reporting.rollups import BUCKETS_PER_DOUBLING, blasts_overview, bucket_of, rollups_refresh
from blasts.reporting.timing import blasts_timings_by_stage
from blasts.services import recipient_advance
from blasts.statuses import STAGE_TIME_FIELDS

from .conftest import make_blast
from .test_rules import _refuse_writes

Status = BlastRecipient.Status
Source = StatusHistory.Source
LADDER = tuple(stage for stage, _ in STAGE_TIME_FIELDS)  # PENDING … CLOSED


def move(rng: random.Random, recipient: BlastRecipient, sent_at) -> None:
    """Take a recipient a random way through the ledger, each stage a random while after the last."""
    if rng.random() < 0.1:
        recipient_advance(
            recipient=recipient, status=rng.choice([Status.SKIPPED, Status.FAILED]), source=Source.SEND
        )
        return
    if rng.random() < 0.1:
        return  # still queued
    at = sent_at
    for status in LADDER[: rng.randint(1, len(LADDER))]:
        recipient_advance(recipient=recipient, status=status, source=Source.WEBHOOK, occurred_at=at)
        at += timedelta(seconds=rng.choice([0, 0.4, 3, 40, 700, 5000, 90000]) * rng.random())
    if rng.random() < 0.1:  # a late ERROR: ignored after delivery, failed before it
        recipient_advance(recipient=recipient, status=Status.FAILED, source=Source.WEBHOOK)


def random_blasts(rng: random.Random, n: int) -> list[Blast]:
    now = timezone.now()
    blasts = []
    for i in range(n):
        blast = make_blast(
            rng.randint(0, 12), tag=f"T{i % 3}", follow_up_stage=rng.choice(["Initial", "Follow-up 1"])
        )
        start = now - timedelta(days=rng.randint(0, 6), hours=rng.randint(0, 23))
        for k, recipient in enumerate(blast.recipients.all()):
            move(rng, recipient, start + timedelta(seconds=3 * k))
        blasts.append(blast)
    return blasts


def assert_exact(blasts) -> int:
    """The overview's numbers against the exact ones; returns how many blasts it computed live."""
    overview = blasts_overview(blasts)
    assert overview.breakdown.cells == blasts_funnel_breakdown(blasts).cells
    assert overview.breakdown.total == blasts_funnel_breakdown(blasts).total
    assert overview.daily == blasts_daily(blasts)
    exact = blasts_timings_by_stage(blasts)
    assert overview.stage_timings.keys() == exact.keys()
    for stage, timings in exact.items():
        for approximate, right in zip(overview.stage_timings[stage], timings, strict=True):
            assert (approximate.stage, approximate.count) == (right.stage, right.count)
            for estimate, value in ((approximate.median, right.median), (approximate.p90, right.p90)):
                if value is None:
                    assert estimate is None
                    continue
                seconds, estimated = value.total_seconds(), estimate.total_seconds()
                assert abs(bucket_of(estimated) - bucket_of(seconds)) <= 1, (stage, approximate.stage, value)
                if seconds >= 1 and bucket_of(seconds) == bucket_of(estimated):  # half a bucket, and rounding
                    assert abs(estimated / seconds - 1) <= 2 ** (1 / BUCKETS_PER_DOUBLING / 2) - 1 + 1e-9
    return overview.live


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_overview_from_rollups_equals_the_exact_numbers_before_and_after_changes(db, seed):
    rng = random.Random(seed)
    blasts = random_blasts(rng, 8)
    every, some = Blast.objects.all(), Blast.objects.filter(tag__in=["T0", "T2"])
    with_recipients = sum(blast.recipients.exists() for blast in blasts)

    assert assert_exact(every) == with_recipients  # no rollups yet: all live
    assert rollups_refresh() == with_recipients
    assert assert_exact(every) == 0  # all from rollups
    assert assert_exact(some) == 0

    changed = set()
    for blast in rng.sample(blasts, 3):  # after the refresh the ledger moves some recipients on
        for recipient in blast.recipients.filter(status__in=[Status.QUEUED, *LADDER[:-1]])[:2]:
            recipient.refresh_from_db()
            status = Status.PENDING if recipient.status == Status.QUEUED else recipient.status + 10
            if recipient_advance(recipient=recipient, status=status, source=Source.MANUAL):
                changed.add(blast.pk)
    new = make_blast(4, tag="T0")  # and a new blast is sent
    for recipient in new.recipients.all():
        move(rng, recipient, timezone.now() - timedelta(hours=2))
    changed.add(new.pk)

    assert assert_exact(every) == len(changed)  # the changed ones live, the rest from rollups
    assert assert_exact(some) == len(
        {b.pk for b in Blast.objects.filter(pk__in=changed, tag__in=["T0", "T2"])}
    )
    assert rollups_refresh() == len(changed)
    assert assert_exact(every) == 0
    assert rollups_refresh() == 0  # nothing changed: nothing computed


def test_a_blast_sending_now_is_left_to_the_live_computation(db):
    blast = make_blast(3)
    for recipient in blast.recipients.all():
        recipient_advance(recipient=recipient, status=Status.PENDING, source=Source.SEND)
    Blast.objects.filter(pk=blast.pk).update(state=Blast.State.SENDING)
    assert rollups_refresh() == 0
    assert not BlastRollup.objects.exists()
    assert assert_exact(Blast.objects.all()) == 1


def test_a_rollup_counted_in_another_time_zone_is_not_used(db, settings):
    blast = make_blast(2)
    for recipient in blast.recipients.all():
        recipient_advance(recipient=recipient, status=Status.READ_ACK, source=Source.WEBHOOK)
    rollups_refresh()
    settings.TIME_ZONE = "America/Los_Angeles"
    assert assert_exact(Blast.objects.all()) == 1


def test_buckets_are_a_quarter_doubling_wide():
    assert [bucket_of(s) for s in (-5, 0, 0.99, 1, 1.18, 1.19, 2, 4, 10**12)] == [0, 0, 0, 1, 1, 2, 5, 9, 99]


def test_the_overview_reads_without_writing_even_with_no_rollups(db):
    blast = make_blast(2)
    for recipient in blast.recipients.all():
        recipient_advance(recipient=recipient, status=Status.DELIVERY_ACK, source=Source.WEBHOOK)
    with connection.execute_wrapper(_refuse_writes):
        assert blasts_overview(Blast.objects.all()).live == 1
    assert not BlastRollup.objects.exists()


def test_the_overview_page_says_its_times_are_approximate_and_counts_from_rollups(admin_client):
    blast = make_blast(3, tag="Raya")
    for recipient in blast.recipients.all():
        recipient_advance(recipient=recipient, status=Status.REPLIED, source=Source.WEBHOOK)
    rollups_refresh()
    page = admin_client.get(reverse("overview")).content.decode()
    assert "These times are approximate" in page and "median / 90% (about)" in page
    assert '<th scope="row">Raya</th><td>3</td><td>3</td><td>3</td><td>3</td><td>0</td>' in page
