"""The contact pages (issue 19, item 3): the list searched and filtered by the segments' rules, a
page of a million contacts without counting them, one contact's timeline across every blast with the
recipient page's marking, changing a contact (audited, by permission), and the admin."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from blasts.audit import SYSTEM
from blasts.contacts.book import contact_edit
from blasts.contacts.selectors import contacts_page
from blasts.models import AuditRecord, BlastRecipient, Contact, ContactTag, OptOut, StatusHistory
from blasts.opt_outs.services import opt_out_add
from blasts.segments.rules import segment_members
from blasts.services import recipient_advance, recipient_mark

from .conftest import make_blast, new_phone
from .test_access import login

Status = BlastRecipient.Status
Did = AuditRecord.Action
LIST = reverse("contact-list")


def person(name="", *, phone=None, attributes=None, tags=(), seen=None) -> Contact:
    contact = Contact.objects.create(phone=phone or new_phone(), name=name, attributes=attributes or {})
    for tag in tags:
        contact.tags.add(ContactTag.objects.get_or_create(name=tag)[0])
    if seen is not None:
        Contact.objects.filter(pk=contact.pk).update(last_seen_at=seen)
    return contact


def messaged(contact: Contact, status=Status.PENDING, *, tag="Launch", **also) -> BlastRecipient:
    """The contact in a new blast of its own, moved (sent first) to `status`."""
    blast = make_blast(0, tag=tag)
    row = BlastRecipient.objects.create(blast=blast, contact=contact, phone=contact.phone, name=contact.name)
    recipient_advance(recipient=row, status=Status.PENDING, source=StatusHistory.Source.SEND)
    if status != Status.PENDING:
        recipient_advance(recipient=row, status=status, source=StatusHistory.Source.WEBHOOK, also=also)
    row.refresh_from_db()
    return row


def listed(client, **params) -> list[str]:
    response = client.get(LIST, params)
    assert response.status_code == 200
    return [contact.phone for contact in response.context["page"].contacts]


# --- the list: search ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed", ["012-345 6789", "+60 12-345 6789", "(012) 345.6789", "60123456789", "6789"]
)
def test_the_list_finds_a_number_typed_in_any_format(admin_client, typed):
    aisyah = person("Aisyah", phone="+60123456789")
    person("Other", phone="+60198765432")
    assert listed(admin_client, q=typed) == [aisyah.phone]


def test_the_list_finds_a_name_in_any_case_and_not_by_the_digits_in_it(admin_client):
    aisyah, ben = person("Aisyah binti Ali"), person("Ben 1")
    assert listed(admin_client, q="AISYAH") == [aisyah.phone]
    assert listed(admin_client, q="ben 1") == [ben.phone]
    assert len(listed(admin_client, q="1")) == 2  # digits alone are a number: both have a 1


# --- the list: filters, each a segment rule ------------------------------------------------------------


def test_the_list_filters_by_tag(admin_client):
    vip, _ = person("Vip", tags=["VIP"]), person("Plain", tags=["Raya"])
    assert listed(admin_client, tag="VIP") == [vip.phone]


def test_the_list_filters_by_an_attributes_value_ignoring_case_or_by_its_having_none(admin_client):
    ipoh = person("Ipoh", attributes={"city": "Ipoh"})
    kl = person("KL", attributes={"city": "Kuala Lumpur"})
    nowhere = person("Nowhere", attributes={"product": "Kopi"})
    assert listed(admin_client, attribute="city", attribute_value="IPOH") == [ipoh.phone]
    assert listed(admin_client, attribute="City", attribute_op="contains", attribute_value="lumpur") == [
        kl.phone
    ]
    assert listed(admin_client, attribute="city", attribute_op="is_empty") == [nowhere.phone]


def test_the_list_filters_by_history_reached_never_reached_and_never_messaged(admin_client):
    now = timezone.now()
    reader, old_reader, sent_only, never = person("R"), person("O"), person("S"), person("N")
    messaged(reader, Status.READ_ACK)
    old = messaged(old_reader, Status.READ_ACK)
    BlastRecipient.objects.filter(pk=old.pk).update(
        read_at=now - timedelta(days=40), sent_at=now - timedelta(days=40)
    )
    messaged(sent_only, Status.PENDING)

    assert set(listed(admin_client, history="reached", stage="read")) == {reader.phone, old_reader.phone}
    assert listed(admin_client, history="reached", stage="read", days=30) == [reader.phone]
    assert set(listed(admin_client, history="not_reached", stage="read")) == {sent_only.phone, never.phone}
    assert listed(admin_client, history="never_messaged") == [never.phone]
    assert set(listed(admin_client, history="never_messaged", days=30)) == {old_reader.phone, never.phone}


def test_filters_combine_with_and_and_match_the_segments_own_rules(admin_client):
    both = person("Both", tags=["VIP"], attributes={"city": "Ipoh"})
    person("Tag only", tags=["VIP"])
    messaged(both, Status.REPLIED)
    params = {
        "tag": "VIP",
        "attribute": "city",
        "attribute_value": "ipoh",
        "history": "reached",
        "stage": "replied",
    }
    rules = [
        {"kind": "tag", "op": "is", "value": "VIP"},
        {"kind": "attribute", "op": "equals", "key": "city", "value": "ipoh"},
        {"kind": "reached", "stage": "replied", "tag": "", "follow_up_stage": "", "days": None},
    ]
    segment = list(segment_members("all", rules).values_list("phone", flat=True))
    assert listed(admin_client, **params) == segment == [both.phone]


def test_opted_out_contacts_are_listed_with_a_badge_which_segments_leave_out(admin_client):
    stopped, _ = person("Stopped", tags=["VIP"]), person("Fine", tags=["VIP"])
    opt_out_add(phone=stopped.phone, reason="STOP", by=SYSTEM)

    response = admin_client.get(LIST, {"tag": "VIP"})

    assert stopped.phone in [c.phone for c in response.context["page"].contacts]
    rows = re.findall(r"<tr>.*?</tr>", response.content.decode(), re.S)
    (row,) = [row for row in rows if stopped.phone in row]
    assert "badge opted-out" in row
    assert sum("badge opted-out" in row for row in rows) == 1
    vip = [{"kind": "tag", "op": "is", "value": "VIP"}]
    assert stopped not in segment_members("all", vip) and len(segment_members("all", vip)) == 1


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"history": "reached"}, "stage", "Choose the stage"),
        ({"stage": "read"}, "history", "Choose reached, never reached or never messaged"),
        ({"history": "reached", "stage": "read", "days": "0"}, "days", "greater than or equal to 1"),
        ({"attribute": "city"}, "attribute_value", "Give the value"),
        ({"attribute_value": "Ipoh"}, "attribute", "Give the attribute"),
        ({"attribute": "!!!", "attribute_value": "x"}, "attribute", "letter or digit"),
        ({"tag": "x" * 201}, "tag", "at most 200"),
        ({"q": "nul\x00here"}, "q", "Null characters are not allowed"),
        ({"history": "sometimes"}, "history", "Select a valid choice"),
    ],
)
def test_a_wrong_filter_says_what_to_fix_by_its_field(admin_client, params, field, words):
    person("Someone")
    response = admin_client.get(LIST, params)
    assert response.status_code == 200
    errors = response.context["filter"].form.errors
    assert words in " ".join(errors[field]), errors
    assert response.context["page"].contacts == []
    assert 'class="error-summary"' in response.content.decode()


# --- the list: paging a million without counting them --------------------------------------------------


def test_pages_go_older_and_newer_by_cursor_in_last_seen_order(db):
    start = timezone.now()
    people = [person(f"P{i}", seen=start - timedelta(minutes=i // 2)) for i in range(7)]  # ties in time too
    everyone = Contact.objects.all()

    first = contacts_page(everyone, size=3)
    second = contacts_page(everyone, after=first.older, size=3)
    third = contacts_page(everyone, after=second.older, size=3)
    back = contacts_page(everyone, before=third.newer, size=3)

    walked = [c.pk for page in (first, second, third) for c in page.contacts]
    assert sorted(walked) == sorted(c.pk for c in people) and len(set(walked)) == 7
    assert walked == [c.pk for c in Contact.objects.order_by("-last_seen_at", "-id")]
    assert first.newer == "" and third.older == ""
    assert [c.pk for c in back.contacts] == [c.pk for c in second.contacts]
    assert [c.pk for c in contacts_page(everyone, before=second.newer, size=3).contacts] == walked[:3]


@pytest.mark.parametrize("cursor", ["", "nonsense", "9" * 18 + "_1", "-5_x", "1_" + "9" * 30, "\u0663_1"])
def test_a_cursor_that_is_not_one_gives_the_first_page(admin_client, cursor):
    newest = person("Newest")
    assert listed(admin_client, after=cursor) == [newest.phone]
    assert listed(admin_client, before=cursor) == [newest.phone]


def test_the_list_never_counts_the_contacts_and_offers_older_when_there_are_more(admin_client):
    Contact.objects.bulk_create([Contact(phone=new_phone()) for _ in range(51)])
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(LIST)
    assert not [q["sql"] for q in queries if q["sql"].upper().startswith("SELECT COUNT(")]
    page = response.context["page"]
    assert len(page.contacts) == 50 and page.older and not page.newer
    assert f"after={page.older}" in response.content.decode()
    older = admin_client.get(LIST, {"after": page.older}).context["page"]
    assert len(older.contacts) == 1 and older.newer and not older.older


@pytest.mark.parametrize("params", [{}, {"tag": "VIP", "q": "0", "history": "reached", "stage": "sent"}])
def test_the_list_page_costs_the_same_queries_for_three_contacts_as_for_thirty(
    admin_client, django_assert_num_queries, params
):
    for count in (3, 30):
        Contact.objects.all().delete()
        for index in range(count):
            messaged(person(f"P{index}", tags=["VIP", f"T{index}"]))
        # session, user, the page of contacts (opt-outs and messages in it), their tags, the tag choices
        with django_assert_num_queries(5):
            response = admin_client.get(LIST, params)
        assert len(response.context["page"].contacts) == count
        BlastRecipient.objects.all().delete()


# --- one contact --------------------------------------------------------------------------------------


def test_the_contact_page_shows_every_blast_newest_first_with_each_stage_the_reply_and_the_deal(admin_client):
    contact = person("Aisyah", attributes={"city": "Ipoh"}, tags=["VIP"])
    early = messaged(contact, Status.DELIVERY_ACK, tag="Early blast")
    sale = messaged(contact, Status.REPLIED, tag="Raya", reply_text="Nak beli dua!")
    recipient_mark(recipient=sale, status=Status.CLOSED, by=SYSTEM, note="paid by transfer", deal_value=150)

    page = admin_client.get(reverse("contact-detail", args=[contact.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert [r.pk for r in page.context["timeline"]] == [sale.pk, early.pk]
    assert html.index("Raya") < html.index("Early blast")
    for words in ("Nak beli dua!", "deal RM 150.00", "paid by transfer", "Ipoh", "{city}", "VIP", "Closed"):
        assert words in html, words
    sale.refresh_from_db()
    for moment in (sale.sent_at, sale.delivered_at, sale.read_at, sale.replied_at, sale.closed_at):
        assert timezone.localtime(moment).strftime("%Y-%m-%d %H:%M") in html
    assert reverse("blast-detail", args=[sale.blast_id]) in html


def test_the_contact_page_says_where_an_opt_out_came_from(admin_client):
    contact = person("Stopped")
    row = messaged(contact, Status.REPLIED, tag="Promo", reply_text="STOP please")
    OptOut.objects.create(
        phone=contact.phone, reason="Replied STOP", source=OptOut.Source.REPLY, blast=row.blast,
        reply_text="STOP please",
    )  # fmt: skip

    html = admin_client.get(reverse("contact-detail", args=[contact.pk])).content.decode()

    opt_out = html[html.index('id="opt-out"') :][:800]
    assert (
        "a reply" in opt_out and "Replied STOP" in opt_out and "STOP please" in opt_out and "Promo" in opt_out
    )


def test_marking_closed_from_the_contact_page_comes_back_to_it(admin_client):
    contact = person("Buyer")
    row = messaged(contact, Status.READ_ACK)
    here = reverse("contact-detail", args=[contact.pk])
    html = admin_client.get(here).content.decode()
    assert (
        reverse("recipient-mark", args=[row.blast_id, row.pk]) in html and f'value="{here}#timeline"' in html
    )

    response = admin_client.post(
        reverse("recipient-mark", args=[row.blast_id, row.pk]),
        {"status": "CLOSED", "deal_value": "99.50", "note": "cash", "next": f"{here}#timeline"},
    )

    assert response.status_code == 302 and response["Location"] == f"{here}#timeline"
    row.refresh_from_db()
    assert (row.status, str(row.deal_value), row.mark_note) == (Status.CLOSED, "99.50", "cash")


def test_a_viewer_sees_the_timeline_without_the_mark_or_edit_forms(db):
    contact = person("Someone")
    row = messaged(contact, Status.READ_ACK)
    client, _ = login("viewer")
    html = client.get(reverse("contact-detail", args=[contact.pk])).content.decode()
    assert reverse("recipient-mark", args=[row.blast_id, row.pk]) not in html
    assert reverse("contact-edit", args=[contact.pk]) not in html
    assert row.blast.tag in html


def test_the_contact_page_costs_the_same_queries_however_long_its_timeline(
    admin_client, django_assert_num_queries
):
    contact = person("Regular", tags=["VIP", "Raya"])
    for count in (1, 12):
        while contact.recipients.count() < count:
            messaged(contact, Status.READ_ACK)
        # session, user, contact, its tags, its opt-out, the timeline's count and its page (with blasts)
        with django_assert_num_queries(7):
            response = admin_client.get(reverse("contact-detail", args=[contact.pk]))
        assert len(response.context["timeline"]) == count


# --- changing a contact ---------------------------------------------------------------------------------


def test_a_marketer_changes_name_attributes_and_tags_and_an_audit_row_says_what(db):
    contact = person("Old", attributes={"city": "Ipoh", "product": "Kopi"}, tags=["VIP", "Raya"])
    client, user = login("marketer")

    response = client.post(
        reverse("contact-edit", args=[contact.pk]),
        {
            "name": "  Aisyah 😀 ",
            "attributes": "city: Kuala Lumpur\n\nLast Order: 2026-03-01",
            "tags": "VIP, New , ",
        },
    )

    assert response.status_code == 302 and response["Location"] == reverse(
        "contact-detail", args=[contact.pk]
    )
    contact.refresh_from_db()
    assert contact.name == "Aisyah 😀"
    assert contact.attributes == {"city": "Kuala Lumpur", "last_order": "2026-03-01"}  # product removed
    assert sorted(contact.tags.values_list("name", flat=True)) == ["New", "VIP"]
    record = AuditRecord.objects.get(action=Did.CONTACT_SAVED)
    assert (record.actor, record.via, record.detail["fields"]) == (
        user,
        "page",
        ["name", "attributes", "tags"],
    )


def test_saving_a_contact_unchanged_leaves_no_audit_row(admin_client):
    contact = person("Same", attributes={"city": "Ipoh"}, tags=["VIP"])
    form = admin_client.get(reverse("contact-detail", args=[contact.pk])).context["edit_form"]
    admin_client.post(reverse("contact-edit", args=[contact.pk]), form.initial)
    assert not AuditRecord.objects.filter(action=Did.CONTACT_SAVED).exists()


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"attributes": "city Ipoh"}, "attributes", "Line 1 has no"),
        ({"attributes": "city: " + "x" * 501}, "attributes", "longer than 500"),
        ({"attributes": "!!!: x"}, "attributes", "needs a letter or digit"),
        ({"name": "x" * 101}, "name", "at most 100"),
        ({"name": "a\x00b"}, "name", "Null characters"),
        ({"tags": "y" * 101}, "tags", "longer than 100"),
    ],
)
def test_a_wrong_edit_shows_the_page_again_with_the_error_by_its_field_and_what_was_typed(
    admin_client, fields, field, words
):
    contact = person("Kept", attributes={"city": "Ipoh"})
    data = {"name": "Kept", "attributes": "city: Ipoh", "tags": "", **fields}

    response = admin_client.post(reverse("contact-edit", args=[contact.pk]), data)

    assert response.status_code == 200
    form = response.context["edit_form"]
    assert words in " ".join(form.errors[field]), form.errors
    html = response.content.decode()
    assert 'class="error-summary"' in html and f'href="#id_{field}"' in html
    assert '<details class="contact-edit" open>' in html
    contact.refresh_from_db()
    assert (contact.name, contact.attributes) == ("Kept", {"city": "Ipoh"})


def test_a_viewer_may_not_change_a_contact(db):
    contact = person("Kept")
    client, _ = login("viewer")
    response = client.post(reverse("contact-edit", args=[contact.pk]), {"name": "Changed"})
    assert response.status_code == 403 and "change_contact" in response.content.decode()
    contact.refresh_from_db()
    assert contact.name == "Kept"


# --- the admin ------------------------------------------------------------------------------------------

ADMIN = "/staff-only/blasts/contact/"


def test_the_admin_finds_a_number_in_any_format_and_a_viewer_may_look(db):
    aisyah, _ = person("Aisyah", phone="+60123456789"), person("Ben")
    client, _ = login("viewer")
    response = client.get(ADMIN, {"q": "012-345 6789"})
    assert response.status_code == 200
    assert [c.pk for c in response.context["cl"].result_list] == [aisyah.pk]
    assert client.get(f"{ADMIN}{aisyah.pk}/change/").status_code == 200


def test_a_viewer_may_not_change_a_contact_in_the_admin(db):
    contact = person("Kept")
    client, _ = login("viewer")
    response = client.post(f"{ADMIN}{contact.pk}/change/", {"name": "Changed", "attributes": "{}"})
    assert response.status_code == 403
    contact.refresh_from_db()
    assert contact.name == "Kept"


def test_a_marketers_admin_change_goes_through_the_service_and_is_audited(db):
    contact = person("Old", tags=["VIP"])
    raya = ContactTag.objects.create(name="Raya")
    client, user = login("marketer")

    response = client.post(
        f"{ADMIN}{contact.pk}/change/", {"name": "New", "attributes": '{"City": "Ipoh"}', "tags": [raya.pk]}
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    contact.refresh_from_db()
    assert (contact.name, contact.attributes) == ("New", {"city": "Ipoh"})
    assert list(contact.tags.values_list("name", flat=True)) == ["Raya"]
    record = AuditRecord.objects.get(action=Did.CONTACT_SAVED)
    assert (record.actor, record.via) == (user, "admin")


def test_the_admin_refuses_attributes_that_are_not_an_object_of_texts(admin_client):
    contact = person("Kept")
    for attributes in ('["a"]', '{"city": ["Ipoh"]}', '{"city": "a\\u0000b"}'):
        response = admin_client.post(f"{ADMIN}{contact.pk}/change/", {"name": "X", "attributes": attributes})
        assert response.status_code == 200
        assert response.context["adminform"].form.errors["attributes"], attributes
    contact.refresh_from_db()
    assert contact.name == "Kept"


def test_the_admin_adds_a_contact_by_a_number_in_any_format(admin_client):
    response = admin_client.post(f"{ADMIN}add/", {"phone": "012-345 6789", "name": "New", "attributes": "{}"})
    assert response.status_code == 302
    contact = Contact.objects.get(phone="+60123456789")
    assert AuditRecord.objects.get(action=Did.CONTACT_SAVED).detail == {"created": True}
    again = admin_client.post(
        f"{ADMIN}add/", {"phone": "+60 12 345 6789", "name": "Twice", "attributes": "{}"}
    )
    assert again.status_code == 200 and "already exists" in str(again.context["adminform"].form.errors)
    assert Contact.objects.get().pk == contact.pk


def test_deleting_a_contact_with_messages_is_refused_in_words_and_one_without_is_audited(admin_client):
    kept, lonely = person("Kept"), person("Lonely")
    messaged(kept)

    refused = admin_client.post(f"{ADMIN}{kept.pk}/delete/", {"post": "yes"})
    deleted = admin_client.post(f"{ADMIN}{lonely.pk}/delete/", {"post": "yes"})

    assert refused.status_code == 200 and "following protected related objects" in refused.content.decode()
    assert deleted.status_code == 302
    assert list(Contact.objects.values_list("pk", flat=True)) == [kept.pk]
    assert AuditRecord.objects.get(action=Did.CONTACT_SAVED).detail == {"deleted": True}


def test_tags_are_searched_and_added_in_the_admin_never_renamed(db):
    ContactTag.objects.create(name="VIP")
    client, _ = login("marketer")
    assert client.get("/staff-only/blasts/contacttag/", {"q": "vi"}).status_code == 200
    assert client.post("/staff-only/blasts/contacttag/add/", {"name": "Raya"}).status_code == 302
    vip = ContactTag.objects.get(name="VIP")
    assert (
        client.post(f"/staff-only/blasts/contacttag/{vip.pk}/change/", {"name": "Renamed"}).status_code == 403
    )
    assert sorted(ContactTag.objects.values_list("name", flat=True)) == ["Raya", "VIP"]


# --- text from outside, on PostgreSQL -------------------------------------------------------------------


@pytest.mark.postgres
def test_any_unicode_in_a_name_or_attribute_is_stored_on_postgresql(admin_client):
    contact = person("Plain")
    contact_edit(
        contact=contact, by=SYSTEM, name="😀 A\x00b \ud800", attributes={"kota\x00": "Ipoh 🌴 \udfff"},
        tags=["🎉 VIP\x00"],
    )  # fmt: skip
    contact.refresh_from_db()
    assert contact.name == "😀 A\ufffdb \ufffd"
    assert contact.attributes == {"kota": "Ipoh 🌴 \ufffd"}
    assert list(contact.tags.values_list("name", flat=True)) == ["🎉 VIP\ufffd"]

    response = admin_client.post(
        reverse("contact-edit", args=[contact.pk]),
        {"name": "Zoë 👩🏽‍💻 ضياء", "attributes": "bandar: 東京 🗼", "tags": "ราคา, 😀"},
    )
    assert response.status_code == 302
    contact.refresh_from_db()
    assert (contact.name, contact.attributes) == ("Zoë 👩🏽‍💻 ضياء", {"bandar": "東京 🗼"})
    html = admin_client.get(LIST, {"q": "ضياء"}).content.decode()
    assert "Zoë 👩🏽‍💻 ضياء" in html
