from blasts.models import BlastRecipient, StatusHistory
from blasts.reporting.funnels import blast_funnel, blast_funnels
from blasts.services import recipient_advance

Status = BlastRecipient.Status

# One recipient at each status, in the order created.
STATUSES = [
    Status.QUEUED, Status.SENDING, Status.PENDING, Status.SERVER_ACK, Status.DELIVERY_ACK,
    Status.READ_ACK, Status.REPLIED, Status.CLOSED, Status.FAILED, Status.UNKNOWN, Status.SKIPPED,
]  # fmt: skip


def put(recipient, status):
    """Walk a recipient to `status` through the ledger, the way real events would."""
    path = {Status.UNKNOWN: [Status.SENDING], Status.FAILED: [Status.PENDING]}.get(status, [])
    for step in [*path, status]:
        recipient_advance(recipient=recipient, status=step, source=StatusHistory.Source.WEBHOOK)


def test_stages_are_cumulative_and_failures_are_counted_apart(blast_factory):
    blast = blast_factory(len(STATUSES))
    for recipient, status in zip(blast.recipients.all(), STATUSES, strict=True):
        if status != Status.QUEUED:
            put(recipient, status)

    funnel = blast_funnel(blast.pk)

    assert funnel.stages() == {"sent": 6, "received": 4, "read": 3, "replied": 2, "closed": 1}
    assert (funnel.not_sent, funnel.failed, funnel.unknown, funnel.skipped) == (2, 1, 1, 1)
    assert funnel.total == len(STATUSES)


def test_server_ack_is_sent_but_not_received(blast_factory):
    """The roadmap's `status != 'PENDING'` would count SERVER_ACK as received; it is not."""
    blast = blast_factory(2, status=Status.SERVER_ACK)
    funnel = blast_funnel(blast.pk)
    assert (funnel.sent, funnel.received) == (2, 0)


def test_stuck_at_counts_current_statuses_in_funnel_order(blast_factory):
    blast = blast_factory(4, status=Status.PENDING)
    first, second, third, _ = blast.recipients.all()
    put(first, Status.DELIVERY_ACK)
    put(second, Status.DELIVERY_ACK)
    put(third, Status.REPLIED)

    assert blast_funnel(blast.pk).stuck() == [
        (Status.QUEUED, 0),
        (Status.SENDING, 0),
        (Status.PENDING, 1),
        (Status.SERVER_ACK, 0),
        (Status.DELIVERY_ACK, 2),
        (Status.READ_ACK, 0),
        (Status.REPLIED, 1),
        (Status.CLOSED, 0),
    ]


def test_a_blast_without_recipients_has_an_empty_funnel(blast_factory):
    blast = blast_factory(0)
    assert blast_funnel(blast.pk).stages() == dict.fromkeys(
        ["sent", "received", "read", "replied", "closed"], 0
    )


def test_funnels_for_many_blasts_take_one_query_like_one_blast(blast_factory, django_assert_num_queries):
    blasts = [blast_factory(2, status=Status.DELIVERY_ACK) for _ in range(100)]

    with django_assert_num_queries(1):
        one = blast_funnels([blasts[0].pk])
    with django_assert_num_queries(1):
        many = blast_funnels([b.pk for b in blasts])

    assert one[blasts[0].pk] == many[blasts[0].pk]
    assert all(f.received == 2 and f.read == 0 for f in many.values())
