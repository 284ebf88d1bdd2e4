"""Sending against the sandbox gateway, in this process (the multi-process proofs are in test_sending_processes)."""

import io
import json
import threading
import tracemalloc
from collections import Counter
from datetime import datetime, timedelta

import pytest
import responses
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from blasts.audit import Actor, Via
from blasts.gateway.client import get_client
from blasts.lifecycle import blast_cancel, blast_pause, blast_queue, blast_resend_unknown, blast_resume
from blasts.models import Blast, BlastRecipient, OptOut, StatusHistory
from blasts.selectors import blast_eta
from blasts.sending import ledger, worker
from blasts.sending.worker import send_due
from blasts.services import recipient_advance

from .conftest import make_blast

Status = BlastRecipient.Status


def queued_blast(recipients=3, **fields):
    blast = make_blast(recipients, device="sandbox", **fields)
    blast_queue(blast=blast)
    return blast


def send(blast=None, **kwargs) -> Counter:
    return send_due(client=get_client(), blast_id=blast.pk if blast else None, **kwargs)


def fault(sandbox, name, count=1):
    with sandbox.lock:
        sandbox._faults.extend([(name, "send")] * count)


def calls_per_phone(sandbox, outcome=None) -> Counter:
    return Counter(c["phone"] for c in sandbox.calls if outcome is None or c["outcome"] == outcome)


def statuses(blast):
    return list(blast.recipients.order_by("id").values_list("status", flat=True))


def test_a_blast_goes_out_once_to_everyone_personalised(gateway):
    blast = queued_blast(3, message="Hi {name}, our {first_name} offer for {phone}")

    assert send(blast)["sent"] == 3

    first = blast.recipients.order_by("id").first()
    assert gateway.calls[0]["message"] == f"Hi Name 1, our Name offer for {first.phone}"
    assert list(calls_per_phone(gateway).values()) == [1, 1, 1]
    assert statuses(blast) == [Status.PENDING] * 3
    assert {r.message_id for r in blast.recipients.all()} == set(gateway.messages)
    assert first.send_response["success"] is True and (first.claimed_by, first.claimed_until) == ("", None)
    assert list(first.history.values_list("from_status", "to_status", "source")) == [
        (Status.QUEUED, Status.SENDING, "send"),
        (Status.SENDING, Status.PENDING, "send"),
    ]
    blast.refresh_from_db()
    assert blast.state == Blast.State.COMPLETED and blast.started_at and blast.finished_at


def test_running_again_sends_nothing_twice(gateway):
    blast = queued_blast(3)
    send(blast)
    assert sum(send().values()) == 0
    assert len(gateway.calls) == 3


@pytest.mark.parametrize("name", ["stall", "drop_response", "not_json"])
def test_an_ambiguous_answer_is_unknown_and_never_resent(gateway, name):
    gateway.config.update({"stall": 1.0})
    blast = queued_blast(3)
    fault(gateway, name)

    assert send(blast)["unknown"] == 1
    send(blast)

    assert statuses(blast).count(Status.UNKNOWN) == 1
    assert list(calls_per_phone(gateway).values()) == [1, 1, 1]
    unknown = blast.recipients.get(status=Status.UNKNOWN)
    assert unknown.failure_reason and unknown.message_id is None
    blast.refresh_from_db()
    assert blast.state == Blast.State.COMPLETED  # nothing left that may be sent automatically


def test_refused_connections_are_retried_and_sent_exactly_once(gateway):
    blast = queued_blast(3)
    gateway.down(0.2)  # short enough that the breaker (10 refusals in a row) does not trip

    tally = send(blast)

    assert tally["sent"] == 3 and tally["requeued"] >= 1
    assert list(calls_per_phone(gateway, "sent").values()) == [1, 1, 1]
    first = blast.recipients.order_by("id").first()
    assert first.attempts >= 2
    assert first.history.filter(from_status=Status.SENDING, to_status=Status.QUEUED).exists()


def test_no_request_inside_an_announced_retry_after_window(gateway):
    gateway.config.update({"retry_after": 1})
    blast = queued_blast(3)
    fault(gateway, "rate_limited")

    assert send(blast)["sent"] == 3

    times = [datetime.fromisoformat(c["at"]) for c in gateway.calls]
    assert gateway.calls[0]["outcome"] == "rate_limited"
    assert (times[1] - times[0]).total_seconds() >= 1.0


def test_an_unauthorised_token_pauses_the_blast_after_three_calls(gateway):
    gateway.config.update({"token": "the-real-one"})
    blast = queued_blast(10)

    send(blast)

    blast.refresh_from_db()
    assert blast.state == Blast.State.PAUSED and "Unauthorized" in blast.state_reason
    assert len(gateway.calls) == 3
    assert set(statuses(blast)) == {Status.QUEUED}  # not the recipients' fault: none failed

    gateway.config.update({"token": "sandbox-token"})
    blast_resume(blast=blast)
    assert send(blast)["sent"] == 10
    assert set(calls_per_phone(gateway, "sent").values()) == {1}


def test_a_success_resets_the_breaker(gateway):
    blast = queued_blast(5)
    fault(gateway, "device_offline", count=2)
    send(blast)
    blast.refresh_from_db()
    assert (blast.state, blast.failure_streak) == (Blast.State.COMPLETED, 0)


def test_an_invalid_number_fails_only_that_recipient(gateway):
    blast = queued_blast(3)
    fault(gateway, "invalid_number")
    send(blast)
    assert sorted(statuses(blast)) == [Status.FAILED, Status.PENDING, Status.PENDING]
    assert "Invalid number" in blast.recipients.get(status=Status.FAILED).failure_reason


def test_a_send_the_gateway_keeps_refusing_fails_after_the_attempt_limit(gateway, settings):
    settings.SEND_MAX_ATTEMPTS = 2
    blast = queued_blast(1)
    fault(gateway, "unavailable", count=2)
    send(blast)
    recipient = blast.recipients.get()
    assert (recipient.status, recipient.attempts) == (Status.FAILED, 2)
    assert recipient.failure_reason.startswith("Gave up after 2 attempts: HTTP 503")


def test_opted_out_numbers_are_skipped_with_the_reason(gateway):
    blast = queued_blast(2)
    opted_out = blast.recipients.first()
    OptOut.objects.create(phone=opted_out.phone, reason="replied STOP")

    assert send(blast)["skipped"] == 1

    opted_out.refresh_from_db()
    assert (opted_out.status, opted_out.failure_reason) == (Status.SKIPPED, "Opted out")
    assert opted_out.phone.lstrip("+") not in calls_per_phone(gateway)


def test_pause_stops_sending_and_resume_never_resends(gateway):
    blast = queued_blast(6)

    def pause_after_two(outcome):
        if outcome == "sent" and len(gateway.calls) == 2:
            blast_pause(blast=Blast.objects.get(pk=blast.pk))

    send(blast, on_outcome=pause_after_two)
    assert len(gateway.calls) == 2
    assert set(blast.recipients.filter(status=Status.QUEUED).values_list("claimed_by", flat=True)) == {""}

    blast_resume(blast=Blast.objects.get(pk=blast.pk))
    send(blast)
    assert len(gateway.calls) == 6 and set(calls_per_phone(gateway).values()) == {1}


def test_a_pause_after_the_claim_sends_nothing_and_gives_the_recipient_back(gateway, monkeypatch):
    blast = queued_blast(1)
    reserve = worker.device_reserve_slot

    def pause_then_reserve(*args, **kwargs):  # the pause lands after send_one read the blast as active
        blast_pause(blast=Blast.objects.get(pk=blast.pk))
        return reserve(*args, **kwargs)

    monkeypatch.setattr(worker, "device_reserve_slot", pause_then_reserve)
    assert send(blast)["released"] == 1
    assert gateway.calls == []
    recipient = blast.recipients.get()
    assert (recipient.status, recipient.claimed_by, recipient.attempts) == (Status.QUEUED, "", 0)
    assert not StatusHistory.objects.filter(recipient=recipient).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_split_the_claims_so_none_is_left_with_the_tail(gateway, settings, monkeypatch):
    settings.SEND_BATCH_SIZE = 20
    blast = queued_blast(30)
    claimed = []
    claim = worker.recipients_claim_and_read

    def record(**kwargs):
        ids, first = claim(**kwargs)
        claimed.append(len(ids))
        return ids, first

    monkeypatch.setattr(worker, "recipients_claim_and_read", record)
    assert send(blast, concurrency=4)["sent"] == 30
    assert max(claimed) == 5  # 20 / 4 senders


def test_a_cancelled_blast_sends_nothing_more(gateway):
    blast = queued_blast(3)
    blast_cancel(blast=blast)
    assert sum(send().values()) == 0
    assert gateway.calls == [] and set(statuses(blast)) == {Status.QUEUED}
    with pytest.raises(ValidationError):
        blast_resume(blast=blast)


def test_a_worker_that_died_mid_send_leaves_unknown_not_a_resend(gateway):
    blast = queued_blast(2)
    lost, other = blast.recipients.order_by("id")
    recipient_advance(recipient=lost, status=Status.SENDING, source=StatusHistory.Source.SEND)
    BlastRecipient.objects.filter(pk=lost.pk).update(
        claimed_by="dead", claimed_until=timezone.now() - timedelta(1)
    )

    send(blast)

    lost.refresh_from_db()
    assert (lost.status, lost.claimed_by) == (Status.UNKNOWN, "")
    assert lost.history.latest("id").source == StatusHistory.Source.INFERRED
    assert list(calls_per_phone(gateway)) == [other.phone.lstrip("+")]


def test_an_expired_claim_goes_back_to_the_queue(gateway):
    blast = queued_blast(1)
    BlastRecipient.objects.update(claimed_by="dead", claimed_until=timezone.now() - timedelta(seconds=1))
    assert send(blast)["sent"] == 1


def test_a_sender_with_nothing_to_claim_waits_for_other_processes_claims_not_its_siblings(db):
    blast = queued_blast(2)
    now = timezone.now()
    until = now + timedelta(seconds=60)
    sibling, other = blast.recipients.order_by("id")
    BlastRecipient.objects.filter(pk=sibling.pk).update(
        status=Status.SENDING, claimed_by=f"{ledger.process_name()}99", claimed_until=until
    )
    assert ledger.next_due_at(now=now, blast_id=blast.pk) is not None  # the other one is unclaimed
    BlastRecipient.objects.filter(pk=other.pk).update(claimed_by="elsewhere:1:2", claimed_until=until)
    assert ledger.next_due_at(now=now, blast_id=blast.pk) == until  # another process may die: wait
    BlastRecipient.objects.filter(pk=other.pk).update(claimed_by=f"{ledger.process_name()}98")
    assert ledger.next_due_at(now=now, blast_id=blast.pk) is None  # siblings finish their own


def test_a_sender_looks_for_lost_sends_every_few_seconds_not_on_every_claim(gateway, settings, monkeypatch):
    settings.SEND_BATCH_SIZE = 2
    blast = queued_blast(6)
    looks = []
    reap = worker.recipients_reap_lost_sends
    monkeypatch.setattr(worker, "recipients_reap_lost_sends", lambda **kw: looks.append(1) or reap(**kw))
    claims = []
    claim = worker.recipients_claim_and_read
    monkeypatch.setattr(worker, "recipients_claim_and_read", lambda **kw: claims.append(1) or claim(**kw))

    assert send(blast)["sent"] == 6
    assert len(claims) >= 4 and looks == [1]


def test_a_live_claim_is_left_to_its_worker(gateway):
    blast = queued_blast(1)
    BlastRecipient.objects.update(claimed_by="alive", claimed_until=timezone.now() + timedelta(minutes=5))
    assert send(blast, stop=_stop_soon())["sent"] == 0
    assert gateway.calls == []


def _stop_soon():
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    return stop


def test_resending_unknown_recipients_is_an_explicit_operator_action(gateway, admin_user):
    blast = queued_blast(2)
    fault(gateway, "drop_response")
    send(blast)

    assert blast_resend_unknown(blast=Blast.objects.get(pk=blast.pk), by=Actor(admin_user, Via.ADMIN)) == 1
    assert send(blast)["sent"] == 1

    assert statuses(blast) == [Status.PENDING, Status.PENDING]
    assert Blast.objects.get(pk=blast.pk).state == Blast.State.COMPLETED
    resend = BlastRecipient.objects.get(history__source="manual")
    assert resend.history.get(source="manual").actor == admin_user


def test_a_scheduled_blast_waits_for_its_time(gateway):
    later = queued_blast(1, scheduled_at=timezone.now() + timedelta(hours=1))
    due = queued_blast(1, scheduled_at=timezone.now() - timedelta(minutes=1))
    send()
    assert statuses(later) == [Status.QUEUED] and statuses(due) == [Status.PENDING]
    assert Blast.objects.get(pk=later.pk).state == Blast.State.QUEUED


def test_a_long_overdue_scheduled_blast_waits_for_confirmation(gateway):
    blast = queued_blast(1, scheduled_at=timezone.now() - timedelta(days=2))

    send()
    blast.refresh_from_db()
    assert blast.state == Blast.State.PAUSED and "scheduled for" in blast.state_reason
    assert gateway.calls == []

    blast_resume(blast=blast)
    assert blast.scheduled_at is None
    assert send()["sent"] == 1


def test_only_a_draft_with_recipients_can_be_queued(db):
    with pytest.raises(ValidationError, match="no recipients"):
        blast_queue(blast=make_blast(0))
    blast = make_blast(1)
    blast_queue(blast=blast)
    with pytest.raises(ValidationError, match="Only a draft"):
        blast_queue(blast=blast)


def test_eta_follows_the_device_pacing_and_the_blasts_ahead(db, settings):
    settings.SEND_RATE_PER_MINUTE, settings.SEND_WINDOW, settings.SEND_DAYS = 60, "", "1234567"
    ahead = queued_blast(60)
    blast = make_blast(30, device="sandbox")
    now = timezone.now()

    eta = blast_eta(blast)

    assert timedelta(seconds=88) <= eta - now <= timedelta(seconds=91)  # 90 messages at one a second
    assert blast_eta(ahead) - now <= timedelta(seconds=61)
    blast_cancel(blast=blast)
    assert blast_eta(blast) is None


def test_sending_memory_does_not_grow_with_the_blast(gateway, settings):
    """Recipients are claimed in batches, never all loaded: 100 sends cost the same from any blast size."""
    settings.BLAST_MAX_RECIPIENTS = 5000

    def peak_for(size):
        blast = queued_blast(size)
        tracemalloc.start()
        stop = _Stop(after=100)
        send(blast, stop=stop, on_outcome=stop.count)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        blast_cancel(blast=Blast.objects.get(pk=blast.pk))
        return peak

    small, large = peak_for(100), peak_for(5000)
    assert large < small * 1.5, (small, large)


class _Stop:
    """A stop event that sets itself after `after` outcomes."""

    def __init__(self, after):
        self.event, self.left = threading.Event(), after
        self.is_set, self.set, self.wait = self.event.is_set, self.event.set, self.event.wait

    def count(self, outcome):
        self.left -= 1
        if self.left <= 0:
            self.event.set()


# --- commands -------------------------------------------------------------------------------


def test_send_blast_sends_in_the_foreground_and_reconciles(gateway):
    blast = make_blast(4, device="sandbox")  # a draft: the command queues it
    OptOut.objects.create(phone=blast.recipients.first().phone)
    fault(gateway, "invalid_number")
    out, err = io.StringIO(), io.StringIO()

    call_command("send_blast", blast.pk, stdout=out, stderr=err)

    assert (
        f"Blast {blast.pk} completed: intended 4 / sent 2 / failed 1 / unknown 0 / skipped 1"
        in out.getvalue()
    )
    assert "msg/s" in err.getvalue() and "3/4" not in err.getvalue().splitlines()[-1:]


def test_send_blast_says_why_a_paused_blast_stopped(gateway):
    gateway.config.update({"token": "the-real-one"})
    blast = queued_blast(5)
    with pytest.raises(CommandError, match="paused: 3 sends in a row failed: Unauthorized"):
        call_command("send_blast", blast.pk, stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.parametrize(
    ("setup", "message"),
    [(lambda: 424242, "There is no blast 424242."), (lambda: _cancelled().pk, "is cancelled")],
)
def test_send_blast_refuses_what_it_cannot_send(db, setup, message):
    with pytest.raises(CommandError, match=message):
        call_command("send_blast", setup(), stdout=io.StringIO(), stderr=io.StringIO())


def _cancelled():
    blast = make_blast(1)
    blast_cancel(blast=blast)
    return blast


def test_send_blasts_sends_everything_due_and_exits(gateway):
    queued_blast(2)
    queued_blast(1)
    out = io.StringIO()
    call_command("send_blasts", stdout=out)
    assert out.getvalue().strip() == "sent 3, failed 0, unknown 0, skipped 0, to retry 0"


def test_a_follow_ups_membership_is_checked_again_right_before_each_send(gateway, admin_user):
    from blasts.follow_ups import blast_create_follow_up

    parent = queued_blast(4)
    send(parent)
    for recipient in parent.recipients.all():
        recipient_advance(
            recipient=recipient, status=Status.DELIVERY_ACK, source=StatusHistory.Source.WEBHOOK
        )
    follow_up = blast_create_follow_up(parent=parent, status=Status.DELIVERY_ACK, message="Still keen?")
    assert follow_up.recipients.count() == 4
    replied, closed, opted_out, still_quiet = parent.recipients.order_by("id")
    # Between creating the follow-up and sending it: a reply, a sale, an opt-out.
    recipient_advance(recipient=replied, status=Status.REPLIED, source=StatusHistory.Source.WEBHOOK)
    recipient_advance(recipient=closed, status=Status.CLOSED, source=StatusHistory.Source.MANUAL)
    OptOut.objects.create(phone=opted_out.phone)
    blast_queue(blast=follow_up)

    tally = send(follow_up)

    assert (tally["sent"], tally["skipped"]) == (1, 3)
    reasons = dict(follow_up.recipients.values_list("phone", "failure_reason"))
    assert reasons[replied.phone] == "Replied on the earlier blast since this follow-up was made"
    assert reasons[closed.phone] == "Closed on the earlier blast since this follow-up was made"
    assert reasons[opted_out.phone] == "Opted out"
    assert follow_up.recipients.get(phone=still_quiet.phone).status == Status.PENDING
    assert calls_per_phone(gateway)[still_quiet.phone.lstrip("+")] == 2  # the blast, then its follow-up


def test_the_frequency_cap_skips_numbers_messaged_recently_except_for_a_follow_up(gateway, settings):
    from blasts.follow_ups import blast_create_follow_up

    settings.FREQUENCY_CAP_DAYS = 3
    first = queued_blast(2)
    send(first)
    phones = list(first.recipients.values_list("phone", flat=True))
    again = make_blast(0, device="sandbox")
    for phone in phones:
        BlastRecipient.objects.create(blast=again, phone=phone)
    blast_queue(blast=again)

    assert send(again) == Counter(skipped=2)
    reason = again.recipients.first().failure_reason
    assert reason.startswith("Messaged ") and reason.endswith("(frequency cap 3 days)")

    for recipient in first.recipients.all():
        recipient_advance(
            recipient=recipient, status=Status.DELIVERY_ACK, source=StatusHistory.Source.WEBHOOK
        )
    follow_up = blast_create_follow_up(parent=first, status=Status.DELIVERY_ACK, message="Still keen?")
    blast_queue(blast=follow_up)
    assert send(follow_up)["sent"] == 2  # a follow-up to the blast that messaged them is not capped


def test_the_frequency_cap_is_off_by_default(gateway, settings):
    assert settings.FREQUENCY_CAP_DAYS == 0
    first = queued_blast(1)
    send(first)
    again = make_blast(0, device="sandbox")
    BlastRecipient.objects.create(blast=again, phone=first.recipients.get().phone)
    blast_queue(blast=again)
    assert send(again)["sent"] == 1


@pytest.mark.postgres
def test_the_claim_walks_the_queued_order_index(db):
    # On a big blast the claim must not read and sort every queued row to take a batch of them.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    blast = queued_blast(3)
    with CaptureQueriesContext(connection) as queries:
        ledger.recipients_claim(worker="w", limit=2, now=timezone.now(), blast_id=blast.pk)
    claim = next(q["sql"] for q in queries if "SKIP LOCKED" in q["sql"])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {claim}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "recipient_queued_order" in plan, plan


def _statements_to_send(blast, settings) -> list[str]:
    """The statements send() runs to send `blast` through a gateway that takes every message."""
    settings.WSAPME_BASE_URL, settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX = (
        "https://wsapme.test",
        "t0k",
        False,
    )
    settings.SEND_RATE_PER_MINUTE = 0
    answer = {"success": True, "messageId": "3EB0X", "data": {"key": {"id": "3EB0X"}, "status": "PENDING"}}
    ids = iter(range(1000))

    def gateway(request):
        n = next(ids)
        return 200, {}, json.dumps({**answer, "messageId": f"3EB0X{blast.pk}-{n}"})

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    recipients = blast.recipients.count()
    with responses.RequestsMock() as mock, CaptureQueriesContext(connection) as queries:
        mock.add_callback(responses.POST, "https://wsapme.test/v1/sendMessage2", callback=gateway)
        assert send(blast)["sent"] == recipients
    return [q["sql"] for q in queries]


@pytest.mark.postgres
def test_a_send_costs_three_statements_plus_a_share_of_its_batch(db, settings):
    # Per message: the recipient (with its blast, opt-out and device row), SENDING and PENDING (each
    # one statement on PostgreSQL): 3, but the batch's first recipient is read by the claim. Once per
    # run or batch (a test's transaction turns BEGIN/COMMIT into SAVEPOINT/RELEASE): housekeeping 6
    # (lost sends, stale blasts, quiet workers, the webhook backlog, replies left waiting, variant tests
    # decided), the claim 1, the device row read and made on first use 4, the blast started 1, the
    # delivery-health check 2, and at the end the empty claim 1 (it carries the look for acks that beat
    # the sends and replies that came during them), completion 8 (the finished blasts; each one's move
    # and its audit row in one transaction, 4; its alert, 3) and the next-due check 1: 24.
    settings.SEND_BATCH_SIZE = 20
    statements = _statements_to_send(queued_blast(10), settings)
    assert len(statements) == 3 * 10 - 1 + 24, "\n".join(sql[:80] for sql in statements)


@pytest.mark.postgres
def test_a_send_in_batches_of_two_costs_three_statements_its_claim_and_look_included(db, settings):
    # 16 senders share SEND_BATCH_SIZE=20 in batches of 2. Per batch: the claim, which reads the first
    # recipient and looks for events waiting on the sends before it, the second recipient's read (which
    # looks too), and SENDING and PENDING of each: 6, so 3 a message, nothing more per batch.
    settings.SEND_BATCH_SIZE = 2
    _statements_to_send(queued_blast(2), settings)  # the device row is made on first use
    ten, twenty = (len(_statements_to_send(queued_blast(n), settings)) for n in (10, 20))
    assert (twenty - ten) / 10 == 3
