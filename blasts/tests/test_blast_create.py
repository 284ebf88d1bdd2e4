import pytest
from django.core.exceptions import ValidationError

from blasts.models import Blast, BlastRecipient, OptOut
from blasts.recipients import parse_recipients, rows_from_text
from blasts.services import blast_create


def create(text, **fields):
    fields = {"tag": "Product Launch", "message": "Hi {name}", "device": "5850", **fields}
    return blast_create(recipients=parse_recipients(rows_from_text(text)), **fields)


def test_creates_a_draft_blast_with_queued_recipients(db):
    created = create("0123456789,Aisyah\n0198765432\n+60123456789", follow_up_stage="Initial")

    assert (created.created, created.duplicates) == (2, 1)
    blast = created.blast
    assert (blast.tag, blast.follow_up_stage, blast.state) == ("Product Launch", "Initial", Blast.State.DRAFT)
    assert list(blast.recipients.values_list("phone", "name", "status")) == [
        ("+60123456789", "Aisyah", BlastRecipient.Status.QUEUED),
        ("+60198765432", "", BlastRecipient.Status.QUEUED),
    ]


@pytest.mark.parametrize("text", ["0123456789\nnonsense", "", "0123456789\n0198765432\n01112345678"])
def test_bad_recipients_create_nothing(db, settings, text):
    settings.BLAST_MAX_RECIPIENTS = 2
    with pytest.raises(ValidationError) as excinfo:
        create(text)
    assert "recipients" in excinfo.value.message_dict
    assert not Blast.objects.exists() and not BlastRecipient.objects.exists()


def test_missing_blast_fields_create_nothing(db):
    with pytest.raises(ValidationError) as excinfo:
        create("0123456789", tag="", device="")
    assert set(excinfo.value.message_dict) == {"tag", "device"}
    assert not Blast.objects.exists()


def test_opted_out_numbers_are_created_skipped_with_the_reason(db):
    OptOut.objects.create(phone="+60198765432", reason="replied STOP")
    created = create("0123456789\n0198765432")
    assert created.opted_out == 1
    skipped = created.blast.recipients.get(phone="+60198765432")
    assert (skipped.status, skipped.failure_reason) == (BlastRecipient.Status.SKIPPED, "Opted out")
    assert created.blast.recipients.get(phone="+60123456789").status == BlastRecipient.Status.QUEUED
