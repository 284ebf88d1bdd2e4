"""poll_statuses: the back-off ladder, what counts as final, the answer shapes, overlapping runs, the API action."""

import io
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from blasts.models import BlastRecipient, StatusHistory, WebhookEvent
from blasts.services import recipient_advance
from blasts.tracking import POLL_LADDER, poll_after, poll_due
from blasts.wsapme import get_client

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

    def run():
        try:
            tallies.append(poll(concurrency=3))
        finally:
            connection.close()

    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()

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


def test_check_status_api_polls_the_blast_now(db, mocked_gateway, admin_client, client, django_user_model):
    first, _ = sent(2, minutes_ago=0)
    mocked_gateway.answers[first.message_id] = {"success": True, "status": "READ_ACK"}
    url = f"/api/blasts/{first.blast_id}/check-status"

    assert client.post(url).status_code == 401  # anonymous: told to authenticate
    client.force_login(django_user_model.objects.create_user("marketer"))
    assert client.post(url).status_code == 403
    response = admin_client.post(url)

    assert (response.status_code, response.json()) == (200, {"checked": 2, "updated": 1})
    assert admin_client.post("/api/blasts/424242/check-status").status_code == 404
