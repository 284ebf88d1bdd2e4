"""The sender's hand-written statements (the read before a send, the claim) give what the ORM gave."""

from datetime import timedelta

import pytest
from django.utils import timezone

from blasts.lifecycle import blast_queue
from blasts.models import BlastRecipient, Device, OptOut, WebhookEvent
from blasts.sending import ledger
from blasts.sending.reads import EndedSends, recipient_for_send, recipients_claim_and_read
from blasts.services import recipient_advance

from .conftest import make_blast

Status = BlastRecipient.Status


def queued_blast(recipients=3, **fields):
    blast = make_blast(recipients, **fields)
    blast_queue(blast=blast)
    return blast


def test_the_read_before_a_send_equals_the_orm_read(db):
    blast = queued_blast(2, device="5850")
    first, second = blast.recipients.order_by("id")
    first.contact.attributes = {"city": "Ipoh"}
    first.contact.save()
    OptOut.objects.create(phone=second.phone)
    Device.objects.create(device_id="5850", rate_per_minute=12, blocked_until=timezone.now())

    recipient, device = recipient_for_send(first.pk)

    orm = BlastRecipient.objects.select_related("blast", "contact").get(pk=first.pk)
    fields = [f.attname for f in BlastRecipient._meta.concrete_fields]
    assert [getattr(recipient, f) for f in fields] == [getattr(orm, f) for f in fields]
    assert recipient.blast.message == blast.message and recipient.blast.state == blast.state
    assert recipient.attributes == {"city": "Ipoh"} and recipient.opted_out is False
    assert (device.rate_per_minute, device.blocked_until) == Device.objects.values_list(
        "rate_per_minute", "blocked_until"
    ).get()
    assert recipient_for_send(second.pk)[0].opted_out is True


def test_the_read_before_a_send_has_no_device_before_its_first_use_nor_a_contact_for_a_canary(db):
    blast = queued_blast(1, device="never-used")
    row = blast.recipients.get()
    BlastRecipient.objects.filter(pk=row.pk).update(contact=None, is_canary=True)

    recipient, device = recipient_for_send(row.pk)

    assert device is None
    assert recipient.contact is None and recipient.attributes == {} and recipient.is_canary


def test_the_claim_takes_the_oldest_blast_first_and_skips_what_is_not_due(db):
    now = timezone.now()
    older, newer = queued_blast(3, device="a"), queued_blast(2, device="b")
    waiting = queued_blast(1, device="c")
    o1, o2, o3 = older.recipients.order_by("id")
    BlastRecipient.objects.filter(pk=o1.pk).update(
        claimed_by="other", claimed_until=now + timedelta(minutes=1)
    )
    BlastRecipient.objects.filter(pk=o2.pk).update(next_attempt_at=now + timedelta(minutes=1))
    n1, n2 = newer.recipients.order_by("id")

    claimed = ledger.recipients_claim(worker="w", limit=3, now=now, skip_devices={"c": now})

    assert claimed == [o3.pk, n1.pk, n2.pk]
    lease = now + timedelta(seconds=30)
    rows = BlastRecipient.objects.filter(pk__in=claimed)
    assert {(r.claimed_by, r.claimed_until >= lease) for r in rows} == {("w", True)}
    assert not waiting.recipients.filter(claimed_by="w").exists()
    assert ledger.recipients_claim(worker="x", limit=5, now=now, blast_id=newer.pk) == []


def _fields(recipient):
    return [getattr(recipient, f.attname) for f in BlastRecipient._meta.concrete_fields]


@pytest.mark.postgres
def test_the_claim_reads_the_first_claimed_recipient_as_the_read_before_a_send_does(db):
    blast = queued_blast(3, device="5850")
    first = blast.recipients.order_by("id").first()
    first.contact.attributes = {"city": "Ipoh"}
    first.contact.save()
    OptOut.objects.create(phone=first.phone)
    Device.objects.create(device_id="5850", rate_per_minute=12)
    now = timezone.now()

    ids, (recipient, device) = recipients_claim_and_read(
        worker="w", limit=2, now=now, blast_id=None, skip_devices={}, ended=EndedSends()
    )

    assert ids == list(blast.recipients.order_by("id").values_list("pk", flat=True)[:2])
    again, device_again = recipient_for_send(first.pk)
    assert _fields(recipient) == _fields(again) and recipient.claimed_by == "w"
    assert recipient.blast.message == blast.message and recipient.attributes == {"city": "Ipoh"}
    assert recipient.opted_out is True and device.rate_per_minute == device_again.rate_per_minute == 12


def _sent_with_an_early_ack(blast):
    """A recipient whose send ended (PENDING, its id stored) and the ack that came before the id was."""
    recipient = blast.recipients.order_by("id").first()
    recipient_advance(recipient=recipient.pk, status=BlastRecipient.Status.PENDING, source="send",
                      also={"message_id": "3EB0EARLY"})  # fmt: skip
    ack = WebhookEvent.objects.create(
        body={}, kind=WebhookEvent.Kind.STATUS, state=WebhookEvent.State.WAITING, message_id="3EB0EARLY",
        status="DELIVERY_ACK",
    )  # fmt: skip
    ended = EndedSends()
    ended.add(recipient.pk, "3EB0EARLY")
    return recipient, ack, ended


def test_the_read_before_a_send_applies_an_ack_that_waited_for_the_send_before_it(db):
    blast = queued_blast(2)
    recipient, ack, ended = _sent_with_an_early_ack(blast)

    recipient_for_send(blast.recipients.order_by("id").last().pk, ended=ended)

    ack.refresh_from_db()
    recipient.refresh_from_db()
    assert (ack.state, recipient.status) == (WebhookEvent.State.APPLIED, BlastRecipient.Status.DELIVERY_ACK)
    assert ended == EndedSends()


@pytest.mark.postgres
def test_a_claim_that_takes_nothing_still_applies_an_ack_that_waited_for_the_last_send(db):
    blast = queued_blast(1)
    _, ack, ended = _sent_with_an_early_ack(blast)

    assert recipients_claim_and_read(
        worker="w", limit=2, now=timezone.now(), blast_id=None, skip_devices={}, ended=ended
    ) == ([], None)

    ack.refresh_from_db()
    assert ack.state == WebhookEvent.State.APPLIED and ended == EndedSends()


def test_a_look_that_finds_nothing_forgets_the_sends_without_another_statement(db, django_assert_num_queries):
    blast = queued_blast(2)
    first, second = blast.recipients.order_by("id")
    ended = EndedSends()
    ended.add(first.pk, "3EB0NOTHING")

    with django_assert_num_queries(1):
        recipient_for_send(second.pk, ended=ended)
    assert ended == EndedSends()
