"""The sender's hand-written statements (the read before a send, the claim) give what the ORM gave."""

from datetime import timedelta

from django.utils import timezone

from blasts.lifecycle import blast_queue
from blasts.models import BlastRecipient, Device, OptOut
from blasts.sending import ledger
from blasts.sending.worker import recipient_for_send

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
