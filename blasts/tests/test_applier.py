"""The applier (apply_events): set-based batches equal to the ledger one by one, failures isolated,
replays, how it wakes, and the command's mistakes."""

import io
import threading
import time
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.db import DataError, OperationalError, connection, transaction
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from blasts.bulk import rows_update
from blasts.models import BlastRecipient, StatusHistory, WebhookEvent
from blasts.services import Advance, recipient_advance, recipients_advance_many, records_prune
from blasts.tracking import applier
from blasts.tracking.applier import Waker, webhook_events_apply
from blasts.tracking.events import webhook_events_store

from .conftest import apply_events, make_blast

Status = BlastRecipient.Status
State = WebhookEvent.State
Source = StatusHistory.Source
postgresql_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's NOTIFY")

STATUSES = [Status.PENDING, Status.SERVER_ACK, Status.DELIVERY_ACK, Status.READ_ACK, Status.REPLIED]
STATUSES += [Status.CLOSED, Status.FAILED, Status.UNKNOWN]
EPOCH = datetime(2026, 11, 1, tzinfo=UTC)


def sent_recipients(count: int, prefix: str = "M") -> list[BlastRecipient]:
    """`count` recipients of a new blast, sent (PENDING) under message ids prefix0, prefix1, ..."""
    recipients = list(make_blast(count).recipients.order_by("pk"))
    for index, recipient in enumerate(recipients):
        recipient_advance(recipient=recipient, status=Status.PENDING, source=Source.SEND)
        BlastRecipient.objects.filter(pk=recipient.pk).update(message_id=f"{prefix}{index}")
    return recipients


def ack(message_id: str, status: str = "READ") -> dict:
    return {"messageId": message_id, "status": status}


# --- the set-based ledger ----------------------------------------------------------------------------

LEDGER_FIELDS = [
    "status",
    "failure_reason",
    "sent_at",
    "server_ack_at",
    "delivered_at",
    "read_at",
    "replied_at",
]
LEDGER_FIELDS += ["closed_at", "failed_at"]


def ledger_state(recipients) -> list:
    rows = BlastRecipient.objects.filter(pk__in=[r.pk for r in recipients]).order_by("pk")
    history = StatusHistory.objects.filter(recipient__in=recipients).order_by("recipient_id", "id")
    return [
        list(rows.values_list(*LEDGER_FIELDS)),
        list(history.values_list("recipient_id", "from_status", "to_status", "source", "occurred_at", "raw")),
    ]


changes = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(STATUSES),
        st.none() | st.integers(0, 10_000).map(lambda s: EPOCH + timedelta(seconds=s)),
        st.sampled_from(["", "WhatsApp reported an error (ERROR)"]),
    ),
    max_size=12,
)


@pytest.mark.django_db
@settings(max_examples=150)
@given(changes=changes)
def test_a_batch_leaves_every_row_and_history_as_the_ledger_one_change_at_a_time(changes):
    one, batch = make_blast(3), make_blast(3)
    singles, batched = list(one.recipients.order_by("pk")), list(batch.recipients.order_by("pk"))
    frozen = timezone.now()
    with mock.patch("django.utils.timezone.now", return_value=frozen):
        expected = [
            recipient_advance(
                recipient=singles[i].pk,
                status=s,
                source=Source.WEBHOOK,
                occurred_at=at,
                raw={"n": n},
                reason=why,
            )
            for n, (i, s, at, why) in enumerate(changes)
        ]
        with transaction.atomic():
            moved = recipients_advance_many(
                [Advance(batched[i].pk, s, at, {"n": n}, why) for n, (i, s, at, why) in enumerate(changes)],
                source=Source.WEBHOOK,
            )
    assert moved == expected
    mine, theirs = ledger_state(batched), ledger_state(singles)
    key = {b.pk: s.pk for b, s in zip(batched, singles, strict=True)}
    mine[1] = [(key[r], *rest) for r, *rest in mine[1]]
    assert mine == theirs


def test_a_batch_writes_its_changes_in_one_update_and_one_history_insert(db, django_assert_num_queries):
    recipients = sent_recipients(20)
    advances = [Advance(r.pk, status) for r in recipients for status in (Status.SERVER_ACK, Status.READ_ACK)]
    with django_assert_num_queries(3):  # the rows locked and read, one UPDATE, one INSERT
        assert all(recipients_advance_many(advances, source=Source.WEBHOOK))
    assert StatusHistory.objects.filter(source=Source.WEBHOOK).count() == 40


def test_a_batch_for_a_recipient_that_does_not_exist_raises_and_changes_nothing(db):
    (recipient,) = sent_recipients(1)
    with pytest.raises(BlastRecipient.DoesNotExist), transaction.atomic():
        recipients_advance_many(
            [Advance(recipient.pk, Status.READ_ACK), Advance(10**9, Status.READ_ACK)], source=Source.WEBHOOK
        )
    recipient.refresh_from_db()
    assert recipient.status == Status.PENDING


def test_rows_update_refuses_text_longer_than_its_column_instead_of_cutting_it(db):
    (recipient,) = sent_recipients(1)
    recipient.name = "é" * 101  # name is varchar(100)
    if connection.vendor == "postgresql":  # SQLite ignores lengths; PostgreSQL is the truth for text
        with pytest.raises(DataError), transaction.atomic():
            rows_update(BlastRecipient, [recipient], ["name"])
    recipient.name, recipient.failure_reason = "Siti 🌸 «中文» \u0301", "x" * 20_000
    rows_update(BlastRecipient, [recipient], ["name", "failure_reason"])
    stored = BlastRecipient.objects.get(pk=recipient.pk)
    assert (stored.name, stored.failure_reason) == ("Siti 🌸 «中文» \u0301", "x" * 20_000)


# --- batches -------------------------------------------------------------------------------------------


def test_a_mixed_batch_ends_each_event_in_the_state_applying_it_alone_would(db):
    first, second = sent_recipients(2)
    webhook_events_store(
        [
            ack("M0", "SERVER_ACK"),
            ack("M0", "READ"),
            ack("M0", "DELIVERY_ACK"),  # late: the recipient has read it
            ack("M1", "EXPLODED"),
            ack("NOT-SENT-YET", "READ"),  # waits for its send to store the id
            {"hello": "world"},
            {"type": "text", "message": "Berminat 👍", "from": f"{second.phone[1:]}@c.us"},
        ]
    )
    tally = webhook_events_apply()
    states = list(WebhookEvent.objects.order_by("pk").values_list("state", "recipient_id", "kind"))
    assert states == [
        (State.APPLIED, first.pk, "status"),
        (State.APPLIED, first.pk, "status"),
        (State.NO_CHANGE, first.pk, "status"),
        (State.IGNORED, None, "status"),
        (State.WAITING, None, "status"),
        (State.REVIEW, None, "unknown"),
        (State.APPLIED, second.pk, "reply"),
    ]
    assert tally == {"applied": 3, "no_change": 1, "ignored": 1, "waiting": 1, "review": 1}
    assert not WebhookEvent.objects.filter(applied_at=None).exists()
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, second.status, second.reply_text) == (
        Status.READ_ACK,
        Status.REPLIED,
        "Berminat 👍",
    )


def test_an_event_that_fails_to_apply_is_marked_for_review_with_its_error_and_holds_nothing_up(db, caplog):
    sent_recipients(3)
    webhook_events_store(
        [ack("M0"), ack("M1"), {"type": "text", "message": "boom", "from": "60123456789@c.us"}, ack("M2")]
    )
    real = applier.webhook_event_apply

    def fails_on_boom(record, event):
        if getattr(event, "text", "") == "boom":
            raise RuntimeError("the reply rules broke")
        real(record, event)

    with mock.patch.object(applier, "webhook_event_apply", fails_on_boom):
        apply_events()
    states = list(WebhookEvent.objects.order_by("pk").values_list("state", "note"))
    assert [state for state, _ in states] == [State.APPLIED, State.APPLIED, State.REVIEW, State.APPLIED]
    assert states[2][1] == "Could not be applied: RuntimeError: the reply rules broke"
    assert set(BlastRecipient.objects.filter(message_id__isnull=False).values_list("status", flat=True)) == {
        Status.READ_ACK
    }


def test_a_database_failure_marks_nothing_and_leaves_the_batch_for_the_next_try(db):
    sent_recipients(2)
    webhook_events_store([ack("M0"), ack("M1")])
    with (
        mock.patch.object(applier, "recipients_advance_many", side_effect=OperationalError("server closed")),
        pytest.raises(OperationalError),
    ):
        webhook_events_apply()
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {State.RECEIVED}
    assert apply_events() == [State.APPLIED, State.APPLIED]


def test_a_batch_takes_events_in_arrival_order_and_no_more_than_its_limit(db):
    sent_recipients(1)
    webhook_events_store([ack("M0", "SERVER_ACK"), ack("M0", "DELIVERY_ACK"), ack("M0", "READ")])
    assert webhook_events_apply(limit=2) == {"applied": 2}
    assert list(WebhookEvent.objects.order_by("pk").values_list("state", flat=True)) == [
        State.APPLIED,
        State.APPLIED,
        State.RECEIVED,
    ]


def test_pruning_old_records_never_deletes_an_event_not_applied_yet(db):
    sent_recipients(3)
    webhook_events_store([ack("M0"), ack("M1")])
    apply_events()
    webhook_events_store([ack("M2")])
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(days=400))
    records_prune(older_than=timedelta(days=30))
    assert list(WebhookEvent.objects.values_list("state", flat=True)) == [State.RECEIVED]


# --- replay --------------------------------------------------------------------------------------------


def test_replay_applies_again_what_did_not_apply_since_then_and_leaves_the_rest(db):
    sent_recipients(1)
    webhook_events_store([ack("M0", "SERVER_ACK")])
    apply_events()
    webhook_events_store([ack("M9", "READ"), ack("M8", "READ")])
    with mock.patch.object(applier, "webhook_event_apply", side_effect=RuntimeError("a bug")):
        apply_events()
    old, new, newer = WebhookEvent.objects.order_by("pk")
    assert [old.state, new.state, newer.state] == [State.APPLIED, State.REVIEW, State.REVIEW]
    WebhookEvent.objects.filter(pk=new.pk).update(received_at=timezone.now() - timedelta(days=2))
    BlastRecipient.objects.filter(message_id="M0").update(message_id="M8")  # as if the fix found its send

    out = io.StringIO()
    since = (timezone.localtime() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    call_command("apply_events", "--replay", "--since", since, stdout=out)

    assert "Queued 1 events received since" in out.getvalue()
    assert "Applied 1 event: 1 applied." in out.getvalue()
    assert list(WebhookEvent.objects.order_by("pk").values_list("state", flat=True)) == [
        State.APPLIED,  # applied before: kept as it was
        State.REVIEW,  # before --since: not touched
        State.APPLIED,
    ]
    assert StatusHistory.objects.filter(source=Source.WEBHOOK).count() == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--replay"], "--replay and --since go together"),
        (["--since", "2026-12-01"], "--replay and --since go together"),
        (["--replay", "--since", "last tuesday"], "is not a date or date and time"),
        (["--batch", "0"], "--batch takes a number of events, 1 or more"),
        (["--every", "0"], "--every takes a number of seconds above 0"),
    ],
)
def test_operator_mistakes_are_one_clear_line(db, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("apply_events", *arguments, stdout=io.StringIO())


# --- waking --------------------------------------------------------------------------------------------


def test_the_startup_line_says_how_the_applier_wakes_and_never_shows_the_direct_url(db, settings):
    settings.DATABASE_DIRECT_URL = "postgres://app:s3cret-pw@ep-direct.neon.tech/blasts"
    out = io.StringIO()
    with mock.patch("blasts.management.commands.apply_events.applier_loop", return_value={}):
        call_command("apply_events", "--loop", stdout=out)
    line = out.getvalue().splitlines()[0]
    assert line.startswith("Applying webhook events in batches of 500, ")
    if connection.vendor == "postgresql":
        assert "NOTIFY on the direct connection (DATABASE_DIRECT_URL)" in line
    else:
        assert "polling every 1 s (SQLite has no NOTIFY)" in line
    assert "s3cret" not in out.getvalue()


@postgresql_only
def test_behind_a_transaction_pooler_without_a_direct_url_it_polls_and_says_why(db, settings):
    settings.DATABASE_POOLED, settings.DATABASE_DIRECT_URL = True, ""
    waker = Waker(1.0)
    assert waker.connect is None and "behind a transaction pooler" in waker.how
    stop = threading.Event()
    stop.set()
    waker.wait(stop)  # polls: returns at once when stopped


@postgresql_only
def test_storing_an_event_wakes_a_listening_applier_at_once(transactional_db, settings):
    if settings.DATABASE_POOLED and not settings.DATABASE_DIRECT_URL:
        pytest.skip("behind a transaction pooler, LISTEN needs DATABASE_DIRECT_URL (.ci/pgbouncer sets it)")
    waker, stop = Waker(20.0), threading.Event()
    assert "woken by NOTIFY" in waker.how
    try:
        waker.wait(stop)  # connects and listens
        threading.Timer(0.3, lambda: webhook_events_store([ack("X")])).start()
        started = time.monotonic()
        waker.wait(stop)
        assert time.monotonic() - started < 5, "the insert's NOTIFY did not wake the applier"
    finally:
        waker.close()
