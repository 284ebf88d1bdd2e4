from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from blasts.models import Blast, BlastRecipient, StatusHistory
from blasts.services import recipient_advance

Status = BlastRecipient.Status
Source = StatusHistory.Source
GATEWAY_TIME = datetime(2026, 1, 18, 6, 0, 40, tzinfo=UTC)


def advance(recipient, status, **kwargs):
    kwargs.setdefault("source", Source.WEBHOOK)
    return recipient_advance(recipient=recipient, status=status, **kwargs)


def test_an_applied_change_writes_exactly_one_history_row(recipient, django_user_model):
    user = django_user_model.objects.create(username="marketer")
    raw = {"status": "DELIVERY_ACK", "key": {"id": "3EB0"}}

    assert advance(recipient, Status.DELIVERY_ACK, occurred_at=GATEWAY_TIME, raw=raw, actor=user)

    entry = StatusHistory.objects.get()
    assert (entry.recipient, entry.from_status, entry.to_status) == (
        recipient,
        Status.QUEUED,
        Status.DELIVERY_ACK,
    )
    assert (entry.source, entry.occurred_at, entry.raw, entry.actor) == (
        Source.WEBHOOK,
        GATEWAY_TIME,
        raw,
        user,
    )
    assert abs(entry.recorded_at - timezone.now()) < timedelta(seconds=5)


def test_equal_or_older_event_changes_nothing_and_writes_nothing(recipient):
    advance(recipient, Status.READ_ACK)
    before = BlastRecipient.objects.values().get(pk=recipient.pk)

    assert not advance(recipient, Status.READ_ACK)
    assert not advance(recipient, Status.DELIVERY_ACK)
    assert not advance(recipient, Status.PENDING)

    assert BlastRecipient.objects.values().get(pk=recipient.pk) == before
    assert StatusHistory.objects.count() == 1


def test_late_delivery_ack_does_not_undo_read(recipient):
    advance(recipient, Status.READ_ACK)
    advance(recipient, Status.DELIVERY_ACK)
    recipient.refresh_from_db()
    assert recipient.status == Status.READ_ACK


def test_first_time_of_a_stage_is_kept_and_earlier_stages_get_it_too(recipient):
    t1, t2 = GATEWAY_TIME, GATEWAY_TIME + timedelta(hours=1)
    advance(recipient, Status.SERVER_ACK, occurred_at=t1)
    advance(recipient, Status.REPLIED, occurred_at=t2)
    recipient.refresh_from_db()

    assert (recipient.sent_at, recipient.server_ack_at) == (t1, t1)
    # A reply proves delivery and reading even without a read receipt.
    assert (recipient.delivered_at, recipient.read_at, recipient.replied_at) == (t2, t2, t2)
    assert recipient.closed_at is None


def test_our_time_is_used_when_the_gateway_gives_none(recipient):
    advance(recipient, Status.DELIVERY_ACK)
    recipient.refresh_from_db()
    assert abs(recipient.delivered_at - timezone.now()) < timedelta(seconds=5)
    assert recipient.status_changed_at == recipient.delivered_at
    assert StatusHistory.objects.get().occurred_at is None


def test_reply_without_read_receipt_counts_as_received_and_read(recipient):
    advance(recipient, Status.SERVER_ACK)
    assert advance(recipient, Status.REPLIED)
    recipient.refresh_from_db()
    assert recipient.status == Status.REPLIED
    assert recipient.delivered_at is not None and recipient.read_at is not None


def test_the_callers_instance_sees_the_change(recipient):
    advance(recipient, Status.READ_ACK, occurred_at=GATEWAY_TIME)
    assert recipient.status == Status.READ_ACK
    assert recipient.read_at == GATEWAY_TIME


def test_error_before_delivery_fails_the_recipient_with_its_reason(recipient):
    advance(recipient, Status.SERVER_ACK)
    assert advance(recipient, Status.FAILED, reason="WhatsApp refused the message", occurred_at=GATEWAY_TIME)
    recipient.refresh_from_db()
    assert recipient.status == Status.FAILED
    assert (recipient.failure_reason, recipient.failed_at) == ("WhatsApp refused the message", GATEWAY_TIME)


def test_error_after_delivery_is_ignored(recipient):
    advance(recipient, Status.DELIVERY_ACK)
    assert not advance(recipient, Status.FAILED, reason="late error")
    recipient.refresh_from_db()
    assert (recipient.status, recipient.failure_reason) == (Status.DELIVERY_ACK, "")


def test_acks_below_delivery_do_not_revive_a_failed_recipient(recipient):
    advance(recipient, Status.FAILED)
    assert not advance(recipient, Status.SERVER_ACK)
    assert not advance(recipient, Status.PENDING)
    recipient.refresh_from_db()
    assert recipient.status == Status.FAILED


def test_proof_of_delivery_overrides_an_earlier_error(recipient):
    advance(recipient, Status.FAILED)
    assert advance(recipient, Status.DELIVERY_ACK)
    recipient.refresh_from_db()
    assert recipient.status == Status.DELIVERY_ACK


def test_skipped_recipient_stays_skipped(recipient):
    assert advance(recipient, Status.SKIPPED, reason="opted out", source=Source.SEND)
    assert not advance(recipient, Status.REPLIED)
    recipient.refresh_from_db()
    assert (recipient.status, recipient.failure_reason) == (Status.SKIPPED, "opted out")


@pytest.mark.parametrize("status", [Status.QUEUED, Status.SENDING, Status.UNKNOWN])
def test_send_bookkeeping_statuses_never_follow_a_sent_message(recipient, status):
    advance(recipient, Status.PENDING, source=Source.SEND)
    assert not advance(recipient, status, source=Source.SEND)


def test_a_missing_recipient_raises(db):
    with pytest.raises(BlastRecipient.DoesNotExist):
        advance(424242, Status.PENDING)


def test_a_claim_that_is_gone_changes_nothing_and_does_not_raise(recipient):
    assert not advance(recipient, Status.SENDING, held_by="someone else")
    recipient.refresh_from_db()
    assert recipient.status == Status.QUEUED and not recipient.history.exists()


def test_a_send_held_by_its_sender_moves_only_while_the_blast_is_active(recipient):
    Blast.objects.filter(pk=recipient.blast_id).update(state=Blast.State.SENDING)
    BlastRecipient.objects.filter(pk=recipient.pk).update(claimed_by="sender-1")
    Blast.objects.filter(pk=recipient.blast_id).update(state=Blast.State.PAUSED)
    assert not advance(recipient, Status.SENDING, held_by="sender-1")  # paused between claim and send
    Blast.objects.filter(pk=recipient.blast_id).update(state=Blast.State.SENDING)
    assert advance(recipient, Status.SENDING, held_by="sender-1", also={"attempts": 1})
    recipient.refresh_from_db()
    assert (recipient.status, recipient.attempts, recipient.history.count()) == (Status.SENDING, 1, 1)


def test_a_lost_send_is_reaped_only_once_its_lease_ran_out(recipient):
    lease = timezone.now() + timedelta(seconds=60)
    advance(recipient, Status.SENDING, also={"claimed_by": "sender-1", "claimed_until": lease})
    assert not advance(recipient, Status.UNKNOWN, lease_ended_before=lease - timedelta(seconds=1))
    assert advance(recipient, Status.UNKNOWN, lease_ended_before=lease + timedelta(seconds=1))
    recipient.refresh_from_db()
    assert recipient.status == Status.UNKNOWN


def test_a_queued_row_with_an_old_claim_is_not_a_lost_send(recipient):
    BlastRecipient.objects.filter(pk=recipient.pk).update(claimed_until=timezone.now() - timedelta(hours=1))
    assert not advance(recipient, Status.UNKNOWN, lease_ended_before=timezone.now())


def test_columns_are_set_to_plain_values_only(recipient):
    with pytest.raises(TypeError, match="plain values"):
        advance(recipient, Status.SENDING, also={"attempts": F("attempts") + 1})
    recipient.refresh_from_db()
    assert recipient.status == Status.QUEUED and not recipient.history.exists()


def test_unicode_and_json_reach_the_row_as_given(recipient):
    raw = {"text": "Berapa harga? 🙏 ✓", "nested": [1, {"a": None}]}
    reason = "Gagal: nombor tidak sah — ٣ 🚫"
    assert advance(recipient, Status.FAILED, reason=reason, raw=raw, also={"send_response": raw})
    recipient.refresh_from_db()
    assert (recipient.failure_reason, recipient.send_response) == (reason, raw)
    assert recipient.history.get().raw == raw


@pytest.mark.postgres
def test_on_postgresql_an_advance_is_one_statement(recipient, django_assert_num_queries):
    # Lock, read, update and log in one round trip: the send path makes two advances per message.
    with django_assert_num_queries(1):
        assert advance(recipient.pk, Status.PENDING, also={"message_id": "3EB0ONE"})
    with django_assert_num_queries(1):
        assert not advance(recipient.pk, Status.PENDING)  # no change: still one statement
    recipient.refresh_from_db()
    assert (recipient.status, recipient.message_id, recipient.history.count()) == (
        Status.PENDING,
        "3EB0ONE",
        1,
    )
