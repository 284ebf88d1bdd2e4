"""Properties of the status ledger over arbitrary event streams (Hypothesis)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blasts.models import BlastRecipient, StatusHistory
from blasts.reporting.funnels import blast_funnel
from blasts.services import recipient_advance
from blasts.statuses import STAGE_TIME_FIELDS, status_from_gateway

from .conftest import make_blast

Status = BlastRecipient.Status
RECIPIENTS = 3

# Every spelling the gateway (or a marketer) may use for a ladder status.
LADDER_WORDS = [
    "PENDING", 1, "1", "SERVER_ACK", 2, "2", "DELIVERY_ACK", 3, "3", "READ", "READ_ACK", "read_ack",
    4, "4", "PLAYED", 5, "5", "REPLIED", "CLOSED",
]  # fmt: skip


@st.composite
def event_streams(draw, words):
    """Events for a few recipients, then duplicated and shuffled, as webhooks deliver them."""
    events = draw(st.lists(st.tuples(st.integers(0, RECIPIENTS - 1), st.sampled_from(words)), max_size=10))
    repeats = draw(st.lists(st.sampled_from(events), max_size=5)) if events else []
    return draw(st.permutations(events + repeats))


def apply(recipients, stream):
    for index, word in stream:
        recipient_advance(
            recipient=recipients[index], status=status_from_gateway(word), source=StatusHistory.Source.WEBHOOK
        )


@pytest.mark.django_db
@settings(max_examples=1000)
@given(stream=event_streams(LADDER_WORDS))
def test_any_event_stream_ends_at_the_highest_stage_and_never_goes_back(stream):
    blast = make_blast(RECIPIENTS)
    recipients = list(blast.recipients.all())
    seen = {r.pk: Status.QUEUED for r in recipients}
    history = 0

    for index, word in stream:
        recipient = recipients[index]
        before = recipient.status
        new = status_from_gateway(word)
        applied = recipient_advance(recipient=recipient, status=new, source=StatusHistory.Source.WEBHOOK)
        seen[recipient.pk] = max(seen[recipient.pk], new)
        recipient.refresh_from_db()

        assert recipient.status >= before, "a status moved backwards"
        assert applied == (new > before)
        history += applied
        assert StatusHistory.objects.filter(recipient__blast=blast).count() == history
        for stage, field in STAGE_TIME_FIELDS:
            assert (getattr(recipient, field) is not None) == (recipient.status >= stage), field
        funnel = blast_funnel(blast.pk)
        assert funnel.sent >= funnel.received >= funnel.read >= funnel.replied >= funnel.closed

    assert {r.pk: r.status for r in blast.recipients.all()} == seen


@pytest.mark.django_db
@settings(max_examples=300)
@given(stream=event_streams([*LADDER_WORDS, "ERROR", 0]), data=st.data())
def test_the_final_status_does_not_depend_on_the_order_events_arrive_in(stream, data):
    """ERROR included: two deliveries of the same events in different orders end the same."""
    first, second = make_blast(RECIPIENTS), make_blast(RECIPIENTS)
    apply(list(first.recipients.all()), stream)
    apply(list(second.recipients.all()), data.draw(st.permutations(stream)))

    assert list(first.recipients.values_list("status", flat=True)) == list(
        second.recipients.values_list("status", flat=True)
    )
