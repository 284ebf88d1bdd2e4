"""Timing analytics and the read-receipt-aware funnel, checked against values computed by hand."""

from datetime import UTC, datetime, timedelta

from blasts.models import BlastRecipient, StatusHistory
from blasts.reporting.timing import blast_read_split, blast_reply_curve, blast_timings
from blasts.services import recipient_advance

from .conftest import make_blast

Status = BlastRecipient.Status
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
M, H = timedelta(minutes=1), timedelta(hours=1)


def test_median_and_p90_time_to_each_stage(db):
    blast = make_blast(5)
    # Minutes after sending: server ack 1, 2, 3, 4, 10; delivered 5, 10, 20, 60 (one never);
    # read 30 min, 2 h, 5 h; replied 45 min and 50 h.
    times = [
        (1 * M, 5 * M, 30 * M, 45 * M),
        (2 * M, 10 * M, 2 * H, 50 * H),
        (3 * M, 20 * M, 5 * H, None),
        (4 * M, 60 * M, None, None),
        (10 * M, None, None, None),
    ]
    for recipient, (ack, delivered, read, replied) in zip(
        blast.recipients.order_by("id"), times, strict=True
    ):
        BlastRecipient.objects.filter(pk=recipient.pk).update(
            sent_at=T0,
            server_ack_at=T0 + ack,
            delivered_at=delivered and T0 + delivered,
            read_at=read and T0 + read,
            replied_at=replied and T0 + replied,
        )
    first, second = blast.recipients.order_by("id")[:2]
    for recipient in (first, second):  # two server acks carried the gateway's own time
        StatusHistory.objects.create(
            recipient=recipient, from_status=20, to_status=30, source="webhook", occurred_at=T0 + M
        )

    timings = {t.stage: t for t in blast_timings([blast.pk])}

    ack = timings["server ack"]
    assert (ack.count, ack.median, ack.p90, ack.gateway_times) == (5, 3 * M, 10 * M, 2)
    assert (timings["delivered"].median, timings["delivered"].p90) == (15 * M, 60 * M)  # (10 + 20) / 2
    assert (timings["read"].median, timings["read"].p90) == (2 * H, 5 * H)
    assert (timings["replied"].median, timings["replied"].p90) == ((45 * M + 50 * H) / 2, 50 * H)
    assert timings["replied"].gateway_times == 0
    # Replied within 1 h: 1 of 5; within 72 h: 2 of 5.
    assert blast_reply_curve([blast.pk]) == [(1, 0.2), (4, 0.2), (24, 0.2), (72, 0.4)]


def test_no_sends_no_timings(db):
    blast = make_blast(2)
    assert all(t.count == 0 and t.median is None and t.p90 is None for t in blast_timings([blast.pk]))
    assert blast_reply_curve([blast.pk]) == [(1, 0.0), (4, 0.0), (24, 0.0), (72, 0.0)]


def test_read_is_split_into_receipts_and_replies_that_prove_it(db):
    blast = make_blast(4)
    receipt, reply_only, both, unread = blast.recipients.order_by("id")
    for recipient, steps in [
        (receipt, [Status.PENDING, Status.READ_ACK]),
        (reply_only, [Status.PENDING, Status.DELIVERY_ACK, Status.REPLIED]),  # read receipts off
        (both, [Status.PENDING, Status.READ_ACK, Status.REPLIED]),
        (unread, [Status.PENDING, Status.DELIVERY_ACK]),
    ]:
        for status in steps:
            recipient_advance(recipient=recipient, status=status, source=StatusHistory.Source.WEBHOOK)

    assert blast_read_split(blast.pk) == (2, 1)


def test_durations_read_as_people_say_them():
    from blasts.templatetags.blasts_extras import duration

    cases = [
        (None, "\N{EN DASH}"),
        (timedelta(seconds=45), "45 s"),
        (3 * M, "3 min"),
        (2 * H + 5 * M, "2 h 5 min"),
    ]
    cases += [(2 * H, "2 h"), (27 * H, "1 d 3 h"), (48 * H, "2 d")]
    assert [duration(value) for value, _ in cases] == [text for _, text in cases]


def test_the_blast_page_shows_timing_and_the_read_split(admin_client):
    blast = make_blast(2)
    first, second = blast.recipients.order_by("id")
    for recipient, steps in [
        (first, [Status.PENDING, Status.READ_ACK]),
        (second, [Status.PENDING, Status.REPLIED]),
    ]:
        for status in steps:
            recipient_advance(recipient=recipient, status=status, source=StatusHistory.Source.WEBHOOK)

    html = admin_client.get(f"/blasts/{blast.pk}/").content.decode()

    assert "Read 2: 1 by read receipt, 1 known only from a reply (read receipts off)." in html
    assert "Replied within 1 h: 50% · 4 h: 50% · 24 h: 50% · 72 h: 50%." in html
    assert '<th scope="row">Server ack</th><td>2</td>' in html  # the reply filled the earlier stages' times
