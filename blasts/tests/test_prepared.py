"""The hot paths' statements are prepared on PostgreSQL (blasts/prepared.py): a click, the ledger's write,
the sender's reads. Django's own queries bind client-side and never are."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from blasts.models import BlastRecipient, StatusHistory
from blasts.sending.reads import EndedSends, recipient_for_send
from blasts.services import recipient_advance
from blasts.tracking.links import link_click

from .conftest import make_blast
from .test_links import BROWSER, sent_recipient, tracked

Status = BlastRecipient.Status
Source = StatusHistory.Source
pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's prepared statements")


def prepared(start: str) -> list[int]:
    """How often each statement this connection prepared that starts with `start` ran prepared."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
        return sorted(runs for sql, runs in cursor.fetchall() if " ".join(sql.split()).startswith(start))


def test_a_click_and_the_first_click_s_ledger_write_run_prepared(db):
    code = tracked(sent_recipient(Status.DELIVERY_ACK))
    ledger_writes = prepared("WITH old AS")  # the ledger's statements so far (the recipient's sending)
    for _ in range(3):
        link_click(code, BROWSER, timezone.now())
    assert prepared("WITH link (url,") == [3]  # one statement, planned once, run three times
    # The first click moved the recipient to read, through the ledger: one more of its statements.
    assert sorted([*ledger_writes, 1]) == prepared("WITH old AS")
    assert BlastRecipient.objects.get().status == Status.READ_ACK


def test_the_sender_s_read_is_one_prepared_statement_whatever_the_number_of_ended_sends(db):
    blast = make_blast(3)
    first, *others = blast.recipients.order_by("pk")
    for ended in (EndedSends(), EndedSends([first.message_id or "3EB0A"], [first.pk]), EndedSends()):
        recipient_for_send(first.pk, ended=ended)
    many = EndedSends(["3EB0A", "3EB0B", "3EB0C"], [r.pk for r in others])
    recipient, _ = recipient_for_send(first.pk, ended=many)
    assert recipient.pk == first.pk
    # Without a look and with one, for one ended send or three: two texts, not one a number of ids.
    assert prepared("SELECT r.") == [2, 2]


def test_prepared_statements_are_counted_in_django_s_query_log(db):
    # What the statement-count tests (test_sending_statements) and a DEBUG page's log rely on.
    recipient = make_blast(1).recipients.get()
    with CaptureQueriesContext(connection) as queries:
        recipient_advance(recipient=recipient.pk, status=Status.SENDING, source=Source.SEND)
    assert len(queries) == 1


@pytest.mark.django_db
@settings(max_examples=25, deadline=None)
@given(reason=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=300))
def test_what_the_ledger_writes_from_outside_comes_back_unchanged_as_sent_apart(reason):
    # Parameters sent apart from the text: a reason or raw payload in any script, emoji included, and
    # the NULLs of a history row all reach their columns as they were.
    recipient = make_blast(1).recipients.get()
    moved = recipient_advance(
        recipient=recipient, status=Status.FAILED, source=Source.SEND, reason=reason, raw={"error": reason}
    )
    assert moved
    row = StatusHistory.objects.get(recipient=recipient)
    assert (row.raw, row.occurred_at, row.actor) == ({"error": reason}, None, None)
    assert BlastRecipient.objects.get(pk=recipient.pk).failure_reason == reason
