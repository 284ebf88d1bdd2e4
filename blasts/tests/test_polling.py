"""poll_statuses: the back-off ladder, what counts as final, the answer shapes, overlapping runs, status checks
people ask for (marked in the request, asked about by the poller), and the --loop worker."""

import io
import os
import signal
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from blasts.gateway.client import get_client
from blasts.management.commands import poll_statuses
from blasts.models import BlastRecipient, Heartbeat, StatusCheck, StatusHistory, WebhookEvent
from blasts.services import recipient_advance
from blasts.tracking import polling
from blasts.tracking.polling import (
    CHECK_LOST_AFTER,
    POLL_LADDER,
    blast_check_statuses,
    poll_after,
    poll_due,
    recipients_claim_for_poll,
)

from .conftest import make_blast

Status = BlastRecipient.Status


def sent(count=1, *, minutes_ago=5, status=Status.PENDING):
    """Recipients sent `minutes_ago`, with message ids M0, M1, …, due their first poll."""
    blast = make_blast(count)
    sent_at = timezone.now() - timedelta(minutes=minutes_ago)
    recipients = list(blast.recipients.order_by("id"))
    for index, recipient in enumerate(recipients):
        recipient_advance(recipient=recipient, status=status, source=StatusHistory.Source.SEND)
        BlastRecipient.objects.filter(pk=recipient.pk).update(
            message_id=f"M{recipient.pk}-{index}", sent_at=sent_at, next_poll_at=poll_after(sent_at, 0)
        )
        recipient.refresh_from_db()
    return recipients


def poll(**kwargs) -> Counter:
    return poll_due(client=get_client(), **kwargs)


def two_at_once(work) -> None:
    """Run `work` in two threads at once (each with its own connection, closed after)."""

    def run():
        try:
            work()
        finally:
            connection.close()

    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()


def test_the_ladder_backs_off_then_stops():
    start = datetime(2026, 11, 25, tzinfo=UTC)
    steps = [poll_after(start, polls) - start for polls in range(len(POLL_LADDER))]
    assert [int(step.total_seconds() // 60) for step in steps] == [2, 10, 30, 120, 360, 1440, 4320]
    assert poll_after(start, len(POLL_LADDER)) is None


def test_only_due_unfinished_messages_are_polled(db, mocked_gateway):
    (due,) = sent(minutes_ago=5)
    (not_yet,) = sent(minutes_ago=1)
    finals = [sent(status=status)[0] for status in (Status.READ_ACK, Status.REPLIED, Status.CLOSED)]
    (failed,) = sent()
    recipient_advance(recipient=failed, status=Status.FAILED, source=StatusHistory.Source.WEBHOOK)

    assert sum(poll().values()) == 1

    assert list(mocked_gateway.calls) == [due.message_id]
    assert not_yet.message_id not in mocked_gateway.calls and all(
        r.message_id not in mocked_gateway.calls for r in finals
    )


@pytest.mark.parametrize(
    ("answer", "status", "gateway_time"),
    [
        (
            {"success": True, "data": {"status": "DELIVERY_ACK", "messageC2STimestamp": "1768716100"}},
            40,
            1768716100,
        ),
        ({"success": True, "status": 4, "messageC2STimestamp": 1768716100}, 50, None),
        ({"success": True, "data": {"status": "PLAYED"}}, 50, None),
    ],
)
def test_the_status_is_read_at_the_top_or_under_data(db, mocked_gateway, answer, status, gateway_time):
    (recipient,) = sent()
    mocked_gateway.answers[recipient.message_id] = answer

    assert poll()["updated"] == 1

    recipient.refresh_from_db()
    assert recipient.status == status
    entry = recipient.history.latest("id")
    assert (entry.source, entry.raw) == (StatusHistory.Source.POLL, answer)
    assert entry.occurred_at == (datetime.fromtimestamp(gateway_time, UTC) if gateway_time else None)


def test_unknown_right_now_changes_nothing(db, mocked_gateway):
    (recipient,) = sent()
    assert poll() == Counter(unknown=1)
    recipient.refresh_from_db()
    assert recipient.status == Status.PENDING and recipient.history.count() == 1


def test_an_older_status_from_a_poll_does_not_undo_a_newer_one(db, mocked_gateway):
    (recipient,) = sent(status=Status.DELIVERY_ACK)
    mocked_gateway.answers[recipient.message_id] = {"success": True, "status": "SERVER_ACK"}
    assert poll() == Counter(unchanged=1)
    recipient.refresh_from_db()
    assert recipient.status == Status.DELIVERY_ACK


def test_each_poll_moves_the_message_up_the_ladder_until_it_stops(db, mocked_gateway):
    (recipient,) = sent()
    poll()
    recipient.refresh_from_db()
    assert (recipient.polls, recipient.next_poll_at) == (1, recipient.sent_at + timedelta(minutes=10))

    BlastRecipient.objects.filter(pk=recipient.pk).update(
        polls=len(POLL_LADDER) - 1, next_poll_at=timezone.now()
    )
    poll()
    recipient.refresh_from_db()
    assert recipient.next_poll_at is None  # 72 hours after sending we stop asking
    assert poll() == Counter()


def test_a_final_status_ends_polling(db, mocked_gateway):
    (recipient,) = sent()
    mocked_gateway.answers[recipient.message_id] = {"success": True, "status": "READ_ACK"}
    poll()
    BlastRecipient.objects.filter(pk=recipient.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))
    poll()
    assert mocked_gateway.calls[recipient.message_id] == 1


def test_a_throttled_check_is_an_error_that_changes_nothing(db, mocked_gateway):
    (recipient,) = sent()
    mocked_gateway.answers[recipient.message_id] = (429, {"Retry-After": "30"}, "{}")
    assert poll() == Counter(error=1)
    recipient.refresh_from_db()
    assert recipient.status == Status.PENDING


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_overlapping_runs_poll_each_due_message_at_most_once(mocked_gateway):
    recipients = sent(60)
    tallies = []
    two_at_once(lambda: tallies.append(poll(concurrency=3)))

    assert set(mocked_gateway.calls.values()) == {1}
    assert len(mocked_gateway.calls) == len(recipients) == sum(sum(t.values()) for t in tallies)


def test_blast_option_polls_every_unfinished_message_of_that_blast_now(db, mocked_gateway):
    first, second = sent(2, minutes_ago=0)  # not due by the ladder yet
    mocked_gateway.answers[first.message_id] = {"success": True, "status": "DELIVERY_ACK"}
    out = io.StringIO()

    call_command("poll_statuses", "--blast", first.blast_id, stdout=out)

    assert out.getvalue().strip() == "checked 2, updated 1, unknown 1, errors 0; early acks matched 0"
    assert set(mocked_gateway.calls) == {first.message_id, second.message_id}


def test_poll_statuses_for_a_missing_blast_is_a_command_error(db, mocked_gateway):
    with pytest.raises(CommandError, match=r"There is no blast 424242\."):
        call_command("poll_statuses", "--blast", 424242, stdout=io.StringIO())


def test_poll_statuses_applies_acks_that_arrived_before_their_message_id(db, mocked_gateway):
    (recipient,) = sent(minutes_ago=0)
    WebhookEvent.objects.create(
        kind="status", state="waiting", message_id=recipient.message_id, status="SERVER_ACK", body={}
    )
    out = io.StringIO()
    call_command("poll_statuses", stdout=out)
    assert "early acks matched 1" in out.getvalue()
    recipient.refresh_from_db()
    assert recipient.status == Status.SERVER_ACK


def check(recipients) -> StatusCheck:
    """A status check of the recipients' blast, as the button or the API asks for one."""
    return blast_check_statuses(blast=recipients[0].blast)


def marked(check) -> int:
    return BlastRecipient.objects.filter(status_check=check).count()


# --- status checks people ask for ----------------------------------------------------------------------


def test_a_check_marks_the_blasts_unfinished_sent_messages_and_asks_the_gateway_nothing(db, mocked_gateway):
    first, second, read = sent(3, minutes_ago=0)
    recipient_advance(recipient=read, status=Status.READ_ACK, source=StatusHistory.Source.WEBHOOK)
    BlastRecipient.objects.create(blast=first.blast, phone="+60129999999")  # queued: not sent, no id

    status_check = check([first])

    assert status_check.queued == 2 and status_check.finished_at is None
    assert set(BlastRecipient.objects.filter(status_check=status_check)) == {first, second}
    assert not mocked_gateway.calls


def test_the_poller_asks_about_a_checks_messages_though_not_due_and_counts_them(db, mocked_gateway):
    first, _, third = sent(3, minutes_ago=0)  # not due by the ladder for two minutes
    status_check = check([first])
    mocked_gateway.answers[first.message_id] = {"success": True, "status": "DELIVERY_ACK"}
    mocked_gateway.answers[third.message_id] = (503, {}, "down")

    assert poll() == Counter(updated=1, unknown=1, error=1)

    status_check.refresh_from_db()
    assert (status_check.checked, status_check.updated, status_check.errors) == (3, 1, 1)
    assert status_check.finished_at is not None and marked(status_check) == 0
    first.refresh_from_db()
    assert first.status == Status.DELIVERY_ACK and first.polls == 0  # a check is not a rung of the ladder
    assert poll() == Counter()  # and nothing is asked twice


def test_a_checks_messages_are_taken_before_due_ones(db, mocked_gateway):
    due = sent(25, minutes_ago=5)
    (fresh,) = sent(1, minutes_ago=0)
    check([fresh])
    claimed = recipients_claim_for_poll(now=timezone.now(), limit=20)
    assert claimed[0] == (
        fresh.pk,
        fresh.message_id,
        "5850",
        fresh.blast_id,
        fresh.blast.status_checks.get().pk,
    )
    assert len(claimed) == 20 and {row[0] for row in claimed[1:]} <= {r.pk for r in due}


def test_a_marked_message_that_was_due_anyway_moves_up_the_ladder_and_is_asked_once(db, mocked_gateway):
    (recipient,) = sent(minutes_ago=5)  # due its first poll
    check([recipient])
    poll()
    poll()
    recipient.refresh_from_db()
    assert mocked_gateway.calls[recipient.message_id] == 1
    assert (recipient.polls, recipient.next_poll_at) == (1, recipient.sent_at + timedelta(minutes=10))


def test_a_second_request_while_a_check_runs_returns_that_check(db, mocked_gateway):
    recipients = sent(2, minutes_ago=0)
    first = check(recipients)
    assert check(recipients) == first and StatusCheck.objects.count() == 1
    poll()
    assert check(recipients) != first  # once it is finished, a new request is a new check


def test_with_nothing_to_check_no_check_is_made(db, mocked_gateway):
    (recipient,) = sent(minutes_ago=0, status=Status.READ_ACK)
    assert check([recipient]) is None
    assert not StatusCheck.objects.exists() and not mocked_gateway.calls


def test_a_message_a_webhook_finished_before_the_poller_came_is_still_asked_once_and_counted(
    db, mocked_gateway
):
    first, _ = sent(2, minutes_ago=0)
    status_check = check([first])
    recipient_advance(recipient=first, status=Status.READ_ACK, source=StatusHistory.Source.WEBHOOK)
    mocked_gateway.answers[first.message_id] = {"success": True, "status": "DELIVERY_ACK"}  # it lags

    poll()

    status_check.refresh_from_db()
    assert (status_check.checked, status_check.updated) == (2, 0) and status_check.finished_at is not None
    assert mocked_gateway.calls[first.message_id] == 1
    first.refresh_from_db()
    assert first.status == Status.READ_ACK  # the ledger keeps the newer status


def test_a_stopping_poller_gives_the_check_back_the_messages_it_had_not_asked_about(
    db, mocked_gateway, monkeypatch
):
    recipients = sent(3, minutes_ago=0)
    status_check = check(recipients)
    stop = threading.Event()
    ask = polling.poll_one

    def ask_then_get_sigterm(*args):
        outcome = ask(*args)
        stop.set()
        return outcome

    monkeypatch.setattr(polling, "poll_one", ask_then_get_sigterm)
    assert poll(stop=stop) == Counter(unknown=1)

    status_check.refresh_from_db()
    assert (status_check.checked, status_check.finished_at, marked(status_check)) == (1, None, 2)
    monkeypatch.undo()
    assert poll() == Counter(unknown=2)
    status_check.refresh_from_db()
    assert status_check.checked == 3 and status_check.finished_at is not None


def test_a_check_whose_last_messages_a_dead_poller_took_is_finished_later(db, mocked_gateway):
    recipients = sent(3, minutes_ago=0)
    status_check = check(recipients)
    recipients_claim_for_poll(now=timezone.now(), limit=2)  # claimed, then the poller was killed
    poll()
    status_check.refresh_from_db()
    assert (status_check.checked, status_check.finished_at) == (1, None)

    call_command("poll_statuses", stdout=io.StringIO())
    status_check.refresh_from_db()
    assert status_check.finished_at is None  # it may still be in flight: wait

    StatusCheck.objects.filter(pk=status_check.pk).update(
        last_checked_at=timezone.now() - CHECK_LOST_AFTER - timedelta(seconds=1)
    )
    call_command("poll_statuses", stdout=io.StringIO())
    status_check.refresh_from_db()
    assert status_check.finished_at is not None and status_check.not_checked == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_overlapping_runs_ask_about_each_checked_message_once_and_count_each_once(mocked_gateway):
    recipients = sent(60, minutes_ago=0)
    status_check = check(recipients)
    two_at_once(lambda: poll(concurrency=3))

    assert set(mocked_gateway.calls.values()) == {1} and len(mocked_gateway.calls) == 60
    status_check.refresh_from_db()
    assert (status_check.queued, status_check.checked) == (60, 60) and status_check.finished_at is not None


# --- poll_statuses --loop -------------------------------------------------------------------------------


def test_poll_statuses_loop_asks_about_checks_beats_and_stops_after_its_passes(db, mocked_gateway):
    recipients = sent(2, minutes_ago=0)
    status_check = check(recipients)
    out = io.StringIO()

    call_command("poll_statuses", "--loop", "--every", "0", "--passes", "3", stdout=out)

    status_check.refresh_from_db()
    assert status_check.checked == 2 and status_check.finished_at is not None
    assert out.getvalue().strip() == "checked 2, updated 0, unknown 2, errors 0; early acks matched 0"
    assert Heartbeat.objects.filter(role=Heartbeat.Role.POLLER).exists()


def test_poll_statuses_loop_stops_on_sigterm_and_puts_the_old_handler_back(db, mocked_gateway, monkeypatch):
    runs = []

    def a_pass(**kwargs):
        runs.append(kwargs["stop"].is_set())
        if len(runs) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as a deploy stops the poller
        return Counter(), 0

    def ignore(*_):  # what SIGTERM does here unless the command takes it over
        pass

    monkeypatch.setattr(poll_statuses, "poll_pass", a_pass)
    previous = signal.signal(signal.SIGTERM, ignore)
    try:
        call_command("poll_statuses", "--loop", "--every", "0", "--passes", "10", stdout=io.StringIO())
        after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert runs == [False, False] and after is ignore


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--blast", "1", "--loop"], "--blast checks one blast once"),
        (["--loop", "--passes", "0"], "--passes takes a number of runs, 1 or more"),
    ],
)
def test_poll_statuses_says_what_is_wrong_with_its_options(db, mocked_gateway, monkeypatch, options, error):
    def no_pass(**kwargs):
        raise AssertionError("ran a pass despite the mistake")

    monkeypatch.setattr(poll_statuses, "poll_pass", no_pass)
    with pytest.raises(CommandError, match=error):
        call_command("poll_statuses", *options, stdout=io.StringIO())
