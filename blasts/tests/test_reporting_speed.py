"""The reporting pages' fast paths: percentiles in PostgreSQL, one query for every funnel, pinned query counts."""

import statistics
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from blasts.models import Blast, BlastRecipient, StatusHistory
from blasts.reporting.funnels import audience, blast_funnels, blasts_funnel_breakdown
from blasts.reporting.timing import (
    _durations_in_python,
    _durations_in_sql,
    _percentile,
    blast_timings,
    blasts_timings_by_stage,
)

from .conftest import make_blast
from .test_pages import advance

Status = BlastRecipient.Status
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def sent_after(blast, **stages):
    """Mark the blast's recipients sent at T0, each stage reached after the given durations (None: never)."""
    for index, recipient in enumerate(blast.recipients.order_by("id")):
        times = {f"{at}": after[index] and T0 + after[index] for at, after in stages.items()}
        BlastRecipient.objects.filter(pk=recipient.pk).update(sent_at=T0, **times)


@pytest.mark.postgres
def test_percentiles_computed_by_postgresql_match_python_to_the_microsecond(db):
    # Odd gaps between the middle values (a half microsecond to round), an even and an odd count,
    # and counts where 0.9 * n is not whole.
    initial = make_blast(10, follow_up_stage="Initial")
    follow_up = make_blast(7, follow_up_stage="Follow-up 1")
    sent_after(
        initial,
        delivered_at=[US * n for n in (1, 4, 9, 20, 21, 22, 23, 1000, 5000, 86_400_000_001)],
        read_at=[timedelta(hours=n, microseconds=n) for n in (3, 1, 2)] + [None] * 7,
        server_ack_at=[timedelta(seconds=2)] * 10,
    )
    sent_after(follow_up, delivered_at=[timedelta(minutes=n, microseconds=1) for n in (7, 1, 5, 3, 2, 9, 8)])
    sent = audience(sent_at__isnull=False).order_by()

    in_sql = _durations_in_sql(sent, "blast__follow_up_stage")

    assert in_sql == _durations_in_python(sent, "blast__follow_up_stage")
    delivered = sorted(US * n for n in (1, 4, 9, 20, 21, 22, 23, 1000, 5000, 86_400_000_001))
    assert in_sql["Initial"]["delivered"] == (10, statistics.median(delivered), 5000 * US)
    assert in_sql["Initial"]["read"] == (
        3,
        timedelta(hours=2, microseconds=2),
        timedelta(hours=3, microseconds=3),
    )
    assert in_sql["Follow-up 1"]["delivered"][2] == _percentile(
        sorted(timedelta(minutes=n, microseconds=1) for n in (7, 1, 5, 3, 2, 9, 8)), 0.9
    )
    assert in_sql["Initial"]["replied"] == (0, None, None)
    assert _durations_in_sql(sent, "") == _durations_in_python(sent, "")


def test_one_breakdown_gives_the_total_and_the_funnels_by_tag_and_stage_without_canaries(db):
    a = make_blast(3, tag="Launch", follow_up_stage="Initial")
    b = make_blast(2, tag="Launch", follow_up_stage="Follow-up 1")
    c = make_blast(2, tag="Raya", follow_up_stage="Initial")
    advance(a, Status.REPLIED, Status.DELIVERY_ACK, Status.READ_ACK)
    advance(b, Status.READ_ACK)
    advance(c, Status.CLOSED, Status.PENDING)
    canary = a.recipients.order_by("id").first()
    BlastRecipient.objects.filter(pk=canary.pk).update(is_canary=True)
    make_blast(4, tag="Elsewhere")  # not in the filtered set
    funnels = blast_funnels([a.pk, b.pk, c.pk])

    breakdown = blasts_funnel_breakdown(Blast.objects.exclude(tag="Elsewhere"))

    assert breakdown.total.by_status == {
        Status.DELIVERY_ACK: 1,
        Status.READ_ACK: 2,
        Status.QUEUED: 1,
        Status.CLOSED: 1,
        Status.PENDING: 1,
    }
    assert breakdown.total.total == 6  # 7 recipients, one a canary
    by_tag = breakdown.by("tag")
    assert list(by_tag) == ["Launch", "Raya"]
    assert by_tag["Launch"].stages() == {"sent": 3, "received": 3, "read": 2, "replied": 0, "closed": 0}
    assert by_tag["Raya"].by_status == funnels[c.pk].by_status
    by_stage = breakdown.by("follow_up_stage")
    assert by_stage["Initial"].by_status == {
        s: funnels[a.pk].by_status.get(s, 0) + funnels[c.pk].by_status.get(s, 0)
        for s in {*funnels[a.pk].by_status, *funnels[c.pk].by_status}
    }
    assert by_stage["Follow-up 1"].by_status == funnels[b.pk].by_status


def test_the_overview_leaves_out_the_gateway_share_the_blast_page_shows(db):
    blast = make_blast(2)
    sent_after(blast, server_ack_at=[timedelta(seconds=1), timedelta(seconds=3)])
    first = blast.recipients.order_by("id").first()
    StatusHistory.objects.create(
        recipient=first, from_status=20, to_status=30, source="webhook", occurred_at=T0
    )

    (overview,) = blasts_timings_by_stage(Blast.objects.all()).values()

    ack = next(t for t in overview if t.stage == "server ack")
    assert (ack.count, ack.median, ack.gateway_times) == (2, timedelta(seconds=2), None)
    assert next(t for t in blast_timings([blast.pk]) if t.stage == "server ack").gateway_times == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("blast-list", 7),  # session, user, count, page of blasts, their funnels, totals, the filters' tags
        ("overview", 6),  # session, user, per day, every funnel, timings, the filters' tags
    ],
)
def test_the_reporting_pages_take_a_fixed_number_of_queries(
    admin_client, django_assert_num_queries, name, expected
):
    for n in range(4):
        advance(make_blast(3, tag=f"T{n % 2}", follow_up_stage=f"S{n % 3}"), Status.READ_ACK, Status.REPLIED)
    admin_client.get(reverse(name))  # the session is warm, as it is for every later page
    with django_assert_num_queries(expected):
        assert admin_client.get(reverse(name)).status_code == 200
