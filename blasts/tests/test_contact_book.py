"""Contacts (issue 19, item 1): one per number across every blast, made or updated by every way a blast
is created, with one merge rule; attributes as placeholders with fallbacks; the migration that made
contacts for the recipients before it."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from blasts.contacts.book import ContactIn, contacts_upsert
from blasts.models import Blast, Contact
from blasts.recipients import Recipient, messages_preview, parse_recipients, rows_from_text
from blasts.services import blast_create

from .conftest import make_blast

NASTY = "Aisyah 🌸 \x00 \ud800 ڤيتر"  # an emoji, a NUL, a lone surrogate, Jawi


def _create(lines: str, message: str = "Hello {name}", **fields):
    return blast_create(
        tag="t", message=message, recipients=parse_recipients(rows_from_text(lines)), device="d", **fields
    )


def test_the_same_number_in_several_formats_is_one_contact(db):
    _create("012-345 6789,Aisyah\n")
    _create("+60 12 345 6789\n")
    _create("60123456789,Aisyah binti Ali\n")

    (contact,) = Contact.objects.all()
    assert (contact.phone, contact.name) == ("+60123456789", "Aisyah binti Ali")  # a name given now wins
    assert contact.recipients.count() == 3


def test_an_empty_name_or_cell_never_erases_what_the_contact_has(db):
    contacts_upsert([ContactIn("+60123456789", "Aisyah", {"city": "Ipoh", "product": "Baju"}, ["VIP"])])
    done = contacts_upsert(
        [ContactIn("+60123456789", "", {"city": "", "product": "Tudung", "size": "M"}, ["Raya"])]
    )

    contact = Contact.objects.get()
    assert contact.name == "Aisyah"
    assert contact.attributes == {"city": "Ipoh", "product": "Tudung", "size": "M"}  # merged, new values win
    assert sorted(contact.tags.values_list("name", flat=True)) == ["Raya", "VIP"]  # added, never removed
    assert (done.created, done.updated, done.unchanged) == (0, 1, 0)


def test_upserting_what_is_already_there_changes_nothing_but_last_seen(db):
    contacts_upsert([ContactIn("+60123456789", "Aisyah", {"city": "Ipoh"})])
    before = Contact.objects.get()
    done = contacts_upsert([ContactIn("+60123456789", "Aisyah", {"city": "Ipoh"})])
    after = Contact.objects.get()
    assert (done.created, done.updated, done.unchanged) == (0, 0, 1)
    assert after.first_seen_at == before.first_seen_at and after.last_seen_at > before.last_seen_at


def test_the_same_number_twice_in_one_input_merges_in_order(db):
    done = contacts_upsert(
        [ContactIn("+60123456789", "Ali", {"city": "Ipoh"}), ContactIn("+60123456789", "", {"size": "L"})]
    )
    contact = Contact.objects.get()
    assert (contact.name, contact.attributes, done.created) == ("Ali", {"city": "Ipoh", "size": "L"}, 1)


def test_batches_count_every_contact_once(db):
    people = [ContactIn(f"+6012345{i:04d}", f"N{i}") for i in range(25)]
    contacts_upsert(people[:10])
    done = contacts_upsert(people, batch=7)
    assert (done.created, done.updated, done.unchanged, len(done.ids)) == (15, 0, 10, 25)


def test_outside_text_is_stored_as_postgresql_takes_it(db):
    contacts_upsert([ContactIn("+60123456789", NASTY * 10, {"City of birth ✈": NASTY, "": "x"}, [NASTY])])
    contact = Contact.objects.get()
    assert len(contact.name) <= 100 and "\x00" not in contact.name
    assert contact.attributes == {
        "city_of_birth": NASTY.replace("\x00", "\ufffd").replace("\ud800", "\ufffd")
    }
    assert contact.tags.get().name.startswith("Aisyah 🌸 \ufffd")


def test_canaries_are_sent_but_are_not_contacts(db, settings):
    settings.CANARY_PHONES = ["+60199999999"]
    created = _create("0123456789,Ali\n")
    assert list(created.blast.recipients.values_list("phone", "contact__phone")) == [
        ("+60199999999", None),
        ("+60123456789", "+60123456789"),
    ]
    assert Contact.objects.count() == 1


def test_a_csv_with_extra_columns_gives_attributes_the_message_may_use(db):
    text = "Phone,Name,City,Last Order\n0123456789,Ali,Ipoh,Baju\n0198765432,Siti,,\n"
    created = _create(text, message="Salam {first_name}, from {city|your town}: {last_order|}")

    ali = Contact.objects.get(phone="+60123456789")
    assert ali.attributes == {"city": "Ipoh", "last_order": "Baju"}
    from blasts.recipients import message_render

    texts = [
        message_render(created.blast.message, r) for r in created.blast.recipients.select_related("contact")
    ]
    assert texts == ["Salam Ali, from Ipoh: Baju", "Salam Siti, from your town: "]


def test_an_attribute_kept_from_an_earlier_import_counts_for_a_later_paste(db):
    contacts_upsert([ContactIn("+60123456789", "Ali", {"city": "Ipoh"})])
    created = _create("0123456789\n0198765432\n", message="Jumpa di {city|kedai kami}")
    assert created.created == 2
    with pytest.raises(ValidationError, match=r"No recipient has \{cty\}"):
        _create("0198765432\n", message="Jumpa di {cty}")
    assert Blast.objects.count() == 1  # nothing half-made


def test_the_preview_names_the_recipients_missing_an_attribute():
    recipients = [Recipient("+60123456789", "Ali", {"city": "Ipoh"})] + [
        Recipient(f"+6019876543{i}", f"Siti {i}") for i in range(7)
    ]
    (without_fallback,) = messages_preview("Di {city}", recipients).missing
    assert (without_fallback.count, without_fallback.examples, without_fallback.others) == (
        7,
        ["Siti 0", "Siti 1", "Siti 2", "Siti 3", "Siti 4"],
        2,
    )
    assert not without_fallback.fallback
    assert messages_preview("Di {city|kedai}", recipients).missing[0].fallback


def test_the_new_blast_page_previews_attributes_from_the_contacts_and_the_file(admin_client, db):
    contacts_upsert([ContactIn("+60123456789", "Ali", {"city": "Ipoh"})])
    data = {"tag": "Raya", "follow_up_stage": "Initial", "device": "5850", "preview": "1"}
    data |= {
        "message": "Di {city|kedai kami}, {product}",
        "recipients_text": "Phone,Product\n0123456789,Baju\n0198765432,\n",
    }
    page = admin_client.post(reverse("blast-new"), data).content.decode()
    assert "Di Ipoh, Baju" in page and "Di kedai kami, " in page
    assert "1 of 2 recipients has no city: +60198765432." in page
    assert "1 of 2 recipients has no product" in page and "they get nothing" in page


def test_the_api_takes_attributes_per_recipient(admin_client, db):
    body = {
        "blast_tag": "Raya",
        "message": "Hi {name}, {city|}",
        "recipients": [{"phone": "0123456789", "name": "Ali", "attributes": {"city": "Ipoh", "visits": 3}}],
        "device": "5850",
    }
    assert admin_client.post("/api/blasts", body, content_type="application/json").status_code == 201
    assert Contact.objects.get().attributes == {"city": "Ipoh", "visits": "3"}
    body["recipients"] = [{"phone": "0123456789", "attributes": ["Ipoh"]}]
    answer = admin_client.post("/api/blasts", body, content_type="application/json")
    assert answer.status_code == 400 and "attributes must be an object" in str(answer.json()["recipients"])
    body |= {"message": "Hi {nmae}", "recipients": ["0123456789"]}
    answer = admin_client.post("/api/blasts", body, content_type="application/json")
    assert answer.status_code == 400 and "No recipient has {nmae}" in answer.json()["message"][0]


def test_a_follow_up_links_its_recipients_to_the_same_contacts(db):
    from blasts.follow_ups import blast_create_follow_up
    from blasts.models import BlastRecipient

    parent = make_blast(2, status=BlastRecipient.Status.READ_ACK)
    child = blast_create_follow_up(
        parent=parent, status=BlastRecipient.Status.READ_ACK, message="Again {name}"
    )
    pairs = lambda blast: sorted(blast.recipients.values_list("phone", "contact_id"))  # noqa: E731
    assert pairs(child) == pairs(parent) and Contact.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_migration_makes_one_contact_per_number_with_the_newest_name():
    executor = MigrationExecutor(connection)
    executor.migrate([("blasts", "0013_recipient_mark_note_and_value")])
    apps = executor.loader.project_state([("blasts", "0013_recipient_mark_note_and_value")]).apps
    OldBlast, OldRecipient = apps.get_model("blasts", "Blast"), apps.get_model("blasts", "BlastRecipient")
    OldOptOut = apps.get_model("blasts", "OptOut")
    now = timezone.now()
    older = OldBlast.objects.create(
        tag="a", message="m", device="d", created_at=now - timezone.timedelta(days=9)
    )
    newer = OldBlast.objects.create(tag="b", message="m", device="d", created_at=now)
    OldRecipient.objects.create(blast=older, phone="+60123456789", name="Old name")
    OldRecipient.objects.create(blast=newer, phone="+60123456789", name="")  # no name: the older one stays
    OldRecipient.objects.create(blast=newer, phone="+60198765432", name="Siti")
    OldRecipient.objects.create(blast=newer, phone="+60190000000", name="Team canary", is_canary=True)
    OldOptOut.objects.create(phone="+60198765432", reason="Replied 'STOP'")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    contacts = {c.phone: c for c in Contact.objects.all()}
    assert set(contacts) == {"+60123456789", "+60198765432"}
    assert contacts["+60123456789"].name == "Old name"
    assert contacts["+60123456789"].first_seen_at < contacts["+60123456789"].last_seen_at
    from blasts.models import BlastRecipient, OptOut

    assert BlastRecipient.objects.filter(contact=None).values_list("phone", flat=True).get() == "+60190000000"
    assert OptOut.objects.get().source == OptOut.Source.REPLY


def test_editing_a_drafts_message_in_the_admin_checks_its_placeholders(admin_client, db):
    blast = _create("Phone,City\n0123456789,Ipoh\n0198765432,\n").blast
    url = reverse("admin:blasts_blast_change", args=[blast.pk])
    form = {
        "tag": "t",
        "follow_up_stage": "Initial",
        "device": "d",
        "scheduled_at_0": "",
        "scheduled_at_1": "",
    }

    refused = admin_client.post(url, form | {"message": "Hi from {cty}"})
    assert "No recipient has {cty}" in refused.context["adminform"].form.errors["message"][0]
    admin_client.post(url, form | {"message": "Hi from {city|KL}"})
    blast.refresh_from_db()
    assert blast.message == "Hi from {city|KL}"
