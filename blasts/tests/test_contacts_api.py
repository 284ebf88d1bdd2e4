"""/api/contacts (issue 19, item 6): the list with the contact page's filters, one contact with its
timeline, creating and changing a contact; field-level 400s, roles, query counts, the schema."""

import json

import pytest
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from blasts.audit import SYSTEM
from blasts.models import AuditRecord, BlastRecipient, Contact, OptOut
from blasts.services import recipient_mark

from .test_access import login
from .test_contacts import messaged, person

Status = BlastRecipient.Status
Did = AuditRecord.Action
LIST = "/api/contacts/"


def one(pk) -> str:
    return f"/api/contacts/{pk}/"


def patch(client, pk, body):
    return client.patch(one(pk), json.dumps(body), content_type="application/json")


def post(client, body):
    return client.post(LIST, json.dumps(body), content_type="application/json")


# --- reading ----------------------------------------------------------------------------------------


def test_the_list_is_paginated_newest_seen_first_with_tags_opt_out_and_messages_sent(admin_client):
    older, newer = person("Older", tags=["VIP"]), person("Newer", attributes={"city": "Ipoh"})
    messaged(older, Status.READ_ACK)
    OptOut.objects.create(phone=older.phone)
    Contact.objects.filter(pk=older.pk).update(last_seen_at=newer.last_seen_at.replace(year=2020))

    body = admin_client.get(LIST).json()

    assert body["count"] == 2 and body["next"] is None
    first, second = body["results"]
    assert (first["phone"], first["attributes"], first["opted_out"], first["messages_sent"]) == (
        newer.phone, {"city": "Ipoh"}, False, 0,
    )  # fmt: skip
    assert (second["name"], second["tags"], second["opted_out"], second["messages_sent"]) == (
        "Older",
        ["VIP"],
        True,
        1,
    )


def test_the_list_takes_the_contact_pages_filters(admin_client):
    vip = person("Vip Ipoh", phone="+60123456789", tags=["VIP"], attributes={"city": "Ipoh"})
    other = person("Other", tags=["Raya"])
    messaged(vip, Status.REPLIED)

    def phones(**params):
        return [c["phone"] for c in admin_client.get(LIST, params).json()["results"]]

    assert phones(q="012-345 6789") == phones(tag="VIP") == [vip.phone]
    assert phones(attribute="city", attribute_value="IPOH") == [vip.phone]
    assert phones(attribute="city", attribute_op="is_empty") == [other.phone]
    assert phones(history="reached", stage="replied", days=1) == [vip.phone]
    assert phones(history="never_messaged") == [other.phone]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"history": "reached"}, "stage"),
        ({"days": "abc", "history": "never_messaged"}, "days"),
        ({"attribute_value": "x"}, "attribute"),
        ({"stage": "opened"}, "stage"),
        ({"q": "a\x00"}, "q"),
        ({"page": "\u0663"}, "page"),
    ],
)
def test_a_wrong_filter_is_a_400_naming_its_field(admin_client, params, field):
    person("Someone")
    response = admin_client.get(LIST, params)
    assert response.status_code == 400 and field in response.json(), response.json()


def test_one_contact_has_its_timeline_with_every_stage_and_its_opt_out(admin_client):
    contact = person("Buyer", tags=["VIP"])
    early = messaged(contact, Status.DELIVERY_ACK, tag="Early")
    sale = messaged(contact, Status.REPLIED, tag="Raya", reply_text="Nak dua")
    recipient_mark(recipient=sale, status=Status.CLOSED, by=SYSTEM, note="cash", deal_value=120)
    OptOut.objects.create(phone=contact.phone, reason="Asked", source=OptOut.Source.REPLY, blast=sale.blast)

    body = admin_client.get(one(contact.pk)).json()

    assert body["opted_out"] is True and body["messages_sent"] == 2
    opt_out = body["opt_out"]
    assert (opt_out["source"], opt_out["reason"], opt_out["blast_id"]) == ("reply", "Asked", sale.blast_id)
    assert body["timeline"]["count"] == 2
    latest, first = body["timeline"]["results"]
    assert (latest["recipient"], latest["blast_tag"], latest["status"]) == (sale.pk, "Raya", "CLOSED")
    assert (latest["reply_text"], latest["deal_value"], latest["mark_note"]) == ("Nak dua", "120.00", "cash")
    assert all(latest[f] for f in ("sent_at", "received_at", "read_at", "replied_at", "closed_at"))
    assert (first["recipient"], first["status"], first["read_at"]) == (early.pk, "DELIVERY_ACK", None)


@pytest.mark.parametrize("pk", ["\u0663", "1.0", "-1", "abc"])
def test_a_contact_id_is_ascii_digits_only(admin_client, pk):
    person("Someone")
    assert admin_client.get(f"/api/contacts/{pk}/").status_code == 404


# --- creating -------------------------------------------------------------------------------------


def test_creating_a_contact_stores_the_number_as_e164_and_is_audited(admin_client, admin_user):
    response = post(admin_client, {"phone": "012-345 6789", "name": " Aisyah ", "attributes": {"City": "Ipoh"},
                                   "tags": ["VIP", "VIP", "Raya"]})  # fmt: skip

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["phone"], body["name"], body["attributes"]) == ("+60123456789", "Aisyah", {"city": "Ipoh"})
    assert sorted(body["tags"]) == ["Raya", "VIP"] and body["timeline"]["results"] == []
    record = AuditRecord.objects.get(action=Did.CONTACT_SAVED)
    assert (record.actor, record.via, record.detail) == (admin_user, "api", {"created": True})


def test_creating_a_number_that_is_a_contact_already_is_a_400_naming_it_and_merges_nothing(admin_client):
    kept = person("Kept", phone="+60123456789", attributes={"city": "Ipoh"})

    response = post(admin_client, {"phone": "+60 12-345 6789", "name": "Other", "attributes": {"city": "KL"}})

    assert response.status_code == 400
    assert f"id {kept.pk}" in response.json()["phone"][0]
    kept.refresh_from_db()
    assert (kept.name, kept.attributes, Contact.objects.count()) == ("Kept", {"city": "Ipoh"}, 1)
    assert not AuditRecord.objects.exists()


BAD_FIELDS = [
    ({"name": "x" * 101}, "name"),
    ({"name": "a\x00b"}, "name"),
    ({"name": ["list"]}, "name"),
    ({"attributes": ["city", "Ipoh"]}, "attributes"),
    ({"attributes": "city=Ipoh"}, "attributes"),
    ({"attributes": {"city": {"name": "Ipoh"}}}, "attributes"),
    ({"attributes": {"city": ["Ipoh"]}}, "attributes"),
    ({"attributes": {"city": True}}, "attributes"),
    ({"attributes": {"city": "a\x00b"}}, "attributes"),
    ({"attributes": {"ci\x00ty": "Ipoh"}}, "attributes"),
    ({"attributes": {"!!!": "Ipoh"}}, "attributes"),
    ({"attributes": {"city": "x" * 501}}, "attributes"),
    ({"attributes": {f"k{i}": "v" for i in range(51)}}, "attributes"),
    ({"tags": "VIP"}, "tags"),
    ({"tags": ["x" * 101]}, "tags"),
    ({"tags": ["a\x00"]}, "tags"),
    ({"tags": [f"t{i}" for i in range(51)]}, "tags"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_FIELDS)
def test_creating_with_a_wrong_field_is_a_400_by_that_field_and_creates_nothing(admin_client, fields, field):
    response = post(admin_client, {"phone": "+60123456789", **fields})
    assert response.status_code == 400 and field in response.json(), response.json()
    assert not Contact.objects.exists()


@pytest.mark.parametrize("phone", ["", "12", "not a number", "+999123", None, 60123456789])
def test_creating_without_a_phone_number_is_a_400_on_phone(admin_client, phone):
    response = post(admin_client, {"phone": phone} if phone is not None else {"name": "No phone"})
    assert response.status_code == 400 and "phone" in response.json(), response.json()


@pytest.mark.parametrize("body", ["[]", '"text"', "{", "null"])
def test_a_body_that_is_not_an_object_is_a_400(admin_client, body):
    assert admin_client.post(LIST, body, content_type="application/json").status_code == 400


# --- changing ---------------------------------------------------------------------------------------


def test_patch_changes_only_what_it_gives_and_is_audited(admin_client):
    contact = person("Old", attributes={"city": "Ipoh", "product": "Kopi"}, tags=["VIP"])

    renamed = patch(admin_client, contact.pk, {"name": "New"})
    retagged = patch(
        admin_client, contact.pk, {"attributes": {"city": "KL", "product": ""}, "tags": ["Raya"]}
    )

    assert renamed.status_code == retagged.status_code == 200
    body = retagged.json()
    assert (body["name"], body["attributes"], body["tags"]) == ("New", {"city": "KL"}, ["Raya"])
    fields = [r.detail["fields"] for r in AuditRecord.objects.filter(action=Did.CONTACT_SAVED).order_by("id")]
    assert fields == [["name"], ["attributes", "tags"]]


@pytest.mark.parametrize(("fields", "field"), [*BAD_FIELDS, ({"phone": "+60198765432"}, "phone")])
def test_patch_with_a_wrong_field_is_a_400_by_that_field_and_changes_nothing(admin_client, fields, field):
    contact = person("Kept", attributes={"city": "Ipoh"}, tags=["VIP"])
    response = patch(admin_client, contact.pk, fields)
    assert response.status_code == 400 and field in response.json(), response.json()
    contact.refresh_from_db()
    assert (contact.name, contact.attributes, [t.name for t in contact.tags.all()]) == (
        "Kept",
        {"city": "Ipoh"},
        ["VIP"],
    )


def test_put_and_delete_are_not_offered(admin_client):
    contact = person("Kept")
    assert admin_client.put(one(contact.pk), "{}", content_type="application/json").status_code == 405
    assert admin_client.delete(one(contact.pk)).status_code == 405


# --- roles ----------------------------------------------------------------------------------------------


def test_a_viewer_reads_contacts_but_may_not_create_or_change_one(db):
    contact = person("Kept")
    client, _ = login("viewer")
    assert client.get(LIST).status_code == client.get(one(contact.pk)).status_code == 200
    for response in (post(client, {"phone": "+60123456789"}), patch(client, contact.pk, {"name": "X"})):
        assert response.status_code == 403 and "change_contact" in response.json()["detail"]
    contact.refresh_from_db()
    assert contact.name == "Kept" and Contact.objects.count() == 1


def test_a_marketer_creates_and_changes_contacts(db):
    client, _ = login("marketer")
    created = post(client, {"phone": "+60123456789"})
    assert created.status_code == 201
    assert patch(client, created.json()["id"], {"name": "Named"}).status_code == 200


def test_anonymous_requests_are_refused(client, db):
    contact = person("Kept")
    assert client.get(LIST).status_code == client.get(one(contact.pk)).status_code == 401


# --- cost ---------------------------------------------------------------------------------------------


def test_the_list_costs_the_same_queries_for_three_contacts_as_for_thirty(
    admin_client, django_assert_num_queries
):
    for count in (3, 30):
        while Contact.objects.count() < count:
            messaged(person("P", tags=["VIP", "Raya"]))
        with django_assert_num_queries(5):  # session, user, the count, the page, its tags
            body = admin_client.get(LIST, {"tag": "VIP"}).json()
        assert len(body["results"]) == count


def test_one_contact_costs_the_same_queries_however_long_its_timeline(
    admin_client, django_assert_num_queries
):
    contact = person("Regular", tags=["VIP"])
    for count in (1, 12):
        while contact.recipients.count() < count:
            messaged(contact, Status.READ_ACK)
        with django_assert_num_queries(7):  # session, user, contact, tags, opt-out, timeline count and page
            body = admin_client.get(one(contact.pk)).json()
        assert len(body["timeline"]["results"]) == count


# --- the schema -----------------------------------------------------------------------------------------


def test_the_schema_documents_the_contacts_operations_and_filters(admin_client):
    paths = admin_client.get("/api/schema/?format=json").json()["paths"]
    assert set(paths["/api/contacts/"]) == {"get", "post"}
    assert set(paths["/api/contacts/{id}/"]) == {"get", "patch"}
    params = {p["name"] for p in paths["/api/contacts/"]["get"]["parameters"]}
    assert {
        "q",
        "tag",
        "attribute",
        "attribute_op",
        "attribute_value",
        "history",
        "stage",
        "days",
        "page",
    } <= params
    patched = paths["/api/contacts/{id}/"]["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert patched["$ref"].endswith("/PatchedContactChangeRequest") or patched["$ref"].endswith(
        "ContactChangeRequest"
    )


# --- text from outside, on PostgreSQL -------------------------------------------------------------------


ANY = st.characters(exclude_categories=())  # lone surrogates and NUL too


@pytest.mark.postgres
@hypothesis_settings(max_examples=60)
@given(
    name=st.text(ANY, max_size=120),
    key=st.text(ANY, min_size=1, max_size=30),
    value=st.text(ANY, max_size=60),
    tag=st.text(ANY, max_size=40),
)
@example(name="😀 \ud800 Zoë", key="kota 🌴", value="\udfff Ipoh", tag="🎉").via("emoji and lone surrogates")
@example(name="a\x00b", key="city", value="Ipoh", tag="VIP").via("NUL in a name")
def test_any_unicode_through_the_api_is_stored_or_refused_by_its_field_never_a_500(
    admin_client, name, key, value, tag
):
    contact, _ = Contact.objects.get_or_create(phone="+60123456789")
    body = json.dumps({"name": name, "attributes": {key: value}, "tags": [tag]})  # lone surrogates as \\ud800

    response = admin_client.patch(one(contact.pk), body, content_type="application/json")

    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 400:
        assert set(response.json()) <= {"name", "attributes", "tags"}
    else:
        stored = Contact.objects.get(pk=contact.pk)
        assert "\x00" not in stored.name + json.dumps(stored.attributes, ensure_ascii=False)
        assert response.json()["name"] == stored.name
