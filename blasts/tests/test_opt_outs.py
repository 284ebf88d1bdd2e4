"""The opt-out list (issue 19, item 5): honoured on every send path; its page, API and admin; where
each entry came from; every change audited."""

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from blasts.audit import SYSTEM, Actor, Via
from blasts.contacts.book import ContactIn, contacts_upsert
from blasts.follow_ups import blast_create_follow_up
from blasts.gateway.client import get_client
from blasts.lifecycle import blast_queue
from blasts.models import AuditRecord, Blast, BlastRecipient, OptOut, Segment, StatusHistory
from blasts.opt_outs.services import opt_out_add
from blasts.recipients import parse_recipients
from blasts.segments.services import blast_create_from_segment
from blasts.sending.worker import send_due
from blasts.services import blast_create, recipient_advance
from blasts.text import clean_text

from .conftest import apply_events, make_blast, new_phone
from .test_access import login

Status = BlastRecipient.Status
Did = AuditRecord.Action
Source = OptOut.Source
# Before (listed before the blast is made), after (opts out between making and sending), fine.
BEFORE, AFTER, FINE = "+60123450001", "+60123450002", "+60123450003"
LOCAL = {BEFORE: "012-345 0001", AFTER: "0123450002", FINE: "+60 12-345 0003"}  # as people type them
LIST_URL = reverse("opt-out-list")
IMPORT_URL = reverse("opt-out-import")
EXPORT_URL = reverse("opt-out-export")
API = "/api/opt-outs"
SECRET = "test-webhook-secret"  # pytest.ini


def listed(phone: str, reason: str = "Asked by phone", **fields) -> OptOut:
    return opt_out_add(phone=phone, reason=reason, by=SYSTEM, **fields)


def audit_rows() -> list[tuple]:
    return list(
        AuditRecord.objects.order_by("id").values_list("actor_name", "via", "action", "about", "detail")
    )


# --- honoured on every path -------------------------------------------------------------------------


@dataclass
class Path:
    """How a blast is made: `prepare` runs before BEFORE is listed (a parent blast, contacts and a
    segment), `make` after it, returning the blast."""

    make: Any
    prepare: Any = lambda: None


def _fields(tag):
    return {"tag": tag, "follow_up_stage": "Initial", "message": "Hi {name}", "device": "sandbox"}


def _by_paste(client, prepared):
    client.post(reverse("blast-new"), {**_fields("Paste"), "recipients_text": "\n".join(LOCAL.values())})
    return Blast.objects.get(tag="Paste")


def _by_upload(client, prepared):
    upload = SimpleUploadedFile(
        "list.csv", ("phone,name\n" + "\n".join(f"{p},Ana" for p in LOCAL.values())).encode()
    )
    client.post(reverse("blast-new"), {**_fields("Upload"), "recipients_file": upload})
    return Blast.objects.get(tag="Upload")


def _by_api(client, prepared):
    body = {"blast_tag": "Api", "message": "Hi", "device": "sandbox", "recipients": list(LOCAL.values())}
    assert client.post("/api/blasts", body, content_type="application/json").json()["opted_out"] == 1
    return Blast.objects.get(tag="Api")


def _by_admin(client, prepared):
    client.post(
        reverse("admin:blasts_blast_add"), {**_fields("Admin"), "recipients_text": "\n".join(LOCAL.values())}
    )
    return Blast.objects.get(tag="Admin")


def _parent():
    rows = [(f"Line {i}", phone, "") for i, phone in enumerate(LOCAL)]
    parent = blast_create(
        tag="Parent", message="Hi", recipients=parse_recipients(rows), device="sandbox"
    ).blast
    for recipient in parent.recipients.all():
        recipient_advance(
            recipient=recipient, status=Status.DELIVERY_ACK, source=StatusHistory.Source.WEBHOOK
        )
    return parent


def _by_follow_up(client, parent):
    return blast_create_follow_up(parent=parent, status=Status.DELIVERY_ACK, message="Still keen?")


def _segment():
    contacts_upsert(ContactIn(phone, "Ana") for phone in LOCAL)
    return Segment.objects.create(name="New people", rules=[{"kind": "never_messaged"}])


def _by_segment(client, segment):
    by = Actor(None, Via.PAGE)
    return blast_create_from_segment(
        segment=segment, tag="Segment", message="Hi", device="sandbox", by=by
    ).blast


PATHS = {
    "page: paste": Path(_by_paste),
    "page: CSV upload": Path(_by_upload),
    "api": Path(_by_api),
    "admin": Path(_by_admin),
    "follow-up": Path(_by_follow_up, _parent),
    "segment": Path(_by_segment, _segment),
}


@pytest.mark.parametrize("path", PATHS)
def test_opt_out_is_honoured_on_every_path_when_made_and_when_sent(gateway, path):
    """A number listed before the blast is made is SKIPPED (a segment leaves it out); one that opts out
    after the blast was made is skipped by the sender; neither is ever sent to."""
    client, _ = login("marketer")
    prepared = PATHS[path].prepare()
    listed(BEFORE)

    blast = PATHS[path].make(client, prepared)

    made = dict(blast.recipients.values_list("phone", "status"))
    assert made.get(BEFORE, Status.SKIPPED) == Status.SKIPPED and made[AFTER] == made[FINE] == Status.QUEUED
    assert (BEFORE in made) is (path != "segment")  # never a member of a segment
    listed(AFTER, reason="Replied STOP to another blast")
    blast_queue(blast=blast)

    tally = send_due(client=get_client(), blast_id=blast.pk)

    assert tally["sent"] == 1
    assert [call["phone"] for call in gateway.calls] == [FINE.lstrip("+")]
    reasons = dict(blast.recipients.values_list("phone", "failure_reason"))
    assert reasons[AFTER] == "Opted out" and reasons.get(BEFORE, "Opted out") == "Opted out"
    assert blast.recipients.get(phone=AFTER).status == Status.SKIPPED


def test_a_stop_reply_records_its_text_and_blast_and_the_page_says_so(admin_client):
    blast = make_blast(1, tag="Raya")
    recipient = blast.recipients.get()
    recipient_advance(recipient=recipient, status=Status.PENDING, source=StatusHistory.Source.SEND)
    body = {"type": "text", "from": recipient.phone.lstrip("+") + "@c.us", "message": "STOP please, no more"}
    stored = Client().post(
        "/api/webhook/wsapme", body, content_type="application/json", headers={"X-Webhook-Token": SECRET}
    )
    assert stored.json() == {"received": 1}
    assert not OptOut.objects.filter(phone=recipient.phone).exists()  # stored, not applied yet
    apply_events()

    opt_out = OptOut.objects.get(phone=recipient.phone)
    assert (opt_out.source, opt_out.blast, opt_out.reply_text, opt_out.added_by) == (
        Source.REPLY, blast, "STOP please, no more", None
    )  # fmt: skip
    html = admin_client.get(LIST_URL).content.decode()
    blast_url = reverse("blast-detail", args=[blast.pk])
    assert f'Replied “STOP please, no more” to <a href="{blast_url}">Raya · Initial</a>' in html
    assert audit_rows() == [("", "system", Did.CREATED, str(blast), {"recipients": 1, "opted_out": 0}),
                            ("", "system", Did.OPT_OUT_ADDED, recipient.phone,
                             {"reason": "Replied 'STOP please, no more'", "source": "reply", "replied_to_blast": blast.pk})]  # fmt: skip


# --- the page -----------------------------------------------------------------------------------------


def test_the_page_says_where_each_entry_came_from_and_links_the_contact(db):
    client, user = login("marketer")
    contact = contacts_upsert([ContactIn("+60123456789", "Aisyah")]).ids["+60123456789"]
    opt_out_add(phone="+60123456789", reason="Asked by phone", by=Actor(user, Via.PAGE))
    listed("+60198765432", reason="From the old list", source=Source.IMPORT)

    html = client.get(LIST_URL).content.decode()

    assert "Added by marketer" in html and "Asked by phone" in html
    assert f'<a href="{reverse("contact-detail", args=[contact])}">Aisyah</a>' in html
    assert "Imported" in html and "From the old list" in html
    assert 'data-label="Came from"' in html and 'data-label="Number"' in html  # cards at phone width
    assert "2 numbers on the list" in html


@pytest.mark.parametrize(
    ("q", "found"),
    [
        ("012-345 6789", ["+60123456789"]),  # any format typed
        ("+60 12 345 6789", ["+60123456789"]),
        ("6789", ["+60123456789"]),  # part of a number
        ("old list", ["+60198765432"]),  # the reason
        ("berhenti", ["+60132222222"]),  # the reply's text
        ("nobody", []),
    ],
)
def test_the_page_finds_a_number_in_any_format_or_words_of_the_reason_or_reply(admin_client, q, found):
    listed("+60123456789")
    listed("+60198765432", reason="From the old list")
    listed("+60132222222", reason="Replied", source=Source.REPLY, reply_text="BERHENTI la")
    page = admin_client.get(LIST_URL, {"q": q})
    assert [o.phone for o in page.context["object_list"]] == found


def test_the_source_filter_shows_one_kind_of_entry(admin_client):
    listed("+60123456789")
    listed("+60198765432", source=Source.IMPORT)
    page = admin_client.get(LIST_URL, {"source": "import"})
    assert [o.phone for o in page.context["object_list"]] == ["+60198765432"]


def test_a_person_adds_a_number_typed_any_way_with_a_reason_and_it_is_audited(db):
    client, user = login("marketer")
    response = client.post(LIST_URL, {"phone": "012-345 6789", "reason": "Asked by phone"})
    assert response.status_code == 302
    opt_out = OptOut.objects.get()
    assert (opt_out.phone, opt_out.reason, opt_out.source, opt_out.added_by) == (
        "+60123456789", "Asked by phone", Source.PERSON, user
    )  # fmt: skip
    assert audit_rows() == [("marketer", "page", Did.OPT_OUT_ADDED, "+60123456789",
                             {"reason": "Asked by phone", "source": "person"})]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "field", "error"),
    [
        ({"phone": "012-345 6789", "reason": "Again"}, "phone", "+60123456789 has opted out already, since "),
        ({"phone": "nonsense", "reason": "Asked"}, "phone", "This is not a phone number."),
        ({"phone": "0123456780", "reason": "  "}, "reason", "This field is required."),
    ],
)
def test_a_wrong_add_is_a_form_error_by_its_field_and_in_the_summary(admin_client, data, field, error):
    listed("+60123456789")
    response = admin_client.post(LIST_URL, data)
    assert response.status_code == 200
    assert response.context["form"].errors[field][0].startswith(error)
    html = response.content.decode()
    assert "There is a problem" in html and f'href="#id_{field}"' in html
    assert OptOut.objects.count() == 1


def test_removing_asks_a_reason_confirms_first_and_is_audited_with_it(db):
    client, _ = login("marketer")
    opt_out = listed("+60123456789")
    url = reverse("opt-out-remove", args=[opt_out.pk])
    assert 'data-confirm="Remove +60123456789 from the opt-out list?' in client.get(url).content.decode()

    refused = client.post(url, {"reason": ""})
    assert refused.status_code == 200 and "reason" in refused.context["form"].errors
    assert OptOut.objects.exists()

    assert client.post(url, {"reason": "Asked to hear from us again"}).status_code == 302
    assert not OptOut.objects.exists()
    [(actor, via, did, about, detail)] = audit_rows()[1:]
    assert (actor, via, did, about, detail["reason"]) == (
        "marketer", "page", Did.OPT_OUT_REMOVED, "+60123456789", "Asked to hear from us again"
    )  # fmt: skip


def test_removing_a_number_someone_else_removed_meanwhile_changes_nothing(admin_client):
    opt_out = listed("+60123456789")
    view = admin_client.get(reverse("opt-out-remove", args=[opt_out.pk]))
    OptOut.objects.all().delete()
    assert view.status_code == 200
    assert admin_client.post(reverse("opt-out-remove", args=[opt_out.pk]), {"reason": "x"}).status_code == 404


def test_a_viewer_reads_the_list_but_cannot_add_remove_import_or_export(db):
    client, _ = login("viewer")
    opt_out = listed("+60123456789")
    before = audit_rows()
    html = client.get(LIST_URL).content.decode()
    assert "+60123456789" in html and "Add a number" not in html and "Export CSV" not in html
    assert "Remove…" not in html and "Import a file" not in html
    upload = SimpleUploadedFile("a.csv", b"0198765432\n")
    for response in (
        client.post(LIST_URL, {"phone": "0198765432", "reason": "x"}),
        client.get(reverse("opt-out-remove", args=[opt_out.pk])),
        client.post(reverse("opt-out-remove", args=[opt_out.pk]), {"reason": "x"}),
        client.get(IMPORT_URL),
        client.post(IMPORT_URL, {"file": upload, "reason": "x"}),
        client.get(EXPORT_URL),
    ):
        assert response.status_code == 403
    assert list(OptOut.objects.values_list("phone", flat=True)) == ["+60123456789"] and audit_rows() == before


def test_the_list_page_takes_the_same_queries_however_many_entries(db, django_assert_num_queries):
    client, user = login("marketer")
    blast = make_blast(1, tag="Raya")
    contacts_upsert([ContactIn("+60123456789", "Aisyah")])
    listed("+60123456789", source=Source.REPLY, blast=blast, reply_text="STOP")

    def page_queries(count):
        for _ in range(count):
            opt_out_add(phone=new_phone(), reason="Asked", by=Actor(user, Via.PAGE))
        # session, user, its permissions (user's, group's), the count, the page with its blasts,
        # adders and contacts
        with django_assert_num_queries(6):
            html = client.get(LIST_URL).content.decode()
        assert html.count("Remove…") == count + 1 + (2 if count == 20 else 0)

    page_queries(2)
    page_queries(20)


# --- import and export --------------------------------------------------------------------------------

IMPORT_FILE = (
    "Phone,Name,Reason\n"
    "012-345 6789,Aisyah,Unsubscribed on the website\n"
    "0198765432,Ben,\n"
    "+60 19-876 5432,Ben again,\n"  # the same number
    "not a number,X,\n"
    "6.01234E+10,Excel,\n"
    "0132222222,Listed,\n"
)


def test_an_import_adds_the_valid_numbers_says_what_became_of_each_line_and_is_audited_once(db):
    client, user = login("marketer")
    listed("+60132222222", reason="Replied STOP")
    upload = SimpleUploadedFile("unsubscribed.csv", IMPORT_FILE.encode())

    response = client.post(IMPORT_URL, {"file": upload, "reason": "From the website"})

    imported = response.context["imported"]
    assert (imported.added, imported.already, imported.repeated) == (2, 1, 1)
    assert imported.invalid == [
        ("Line 5", "not a number", "Not a phone number."),
        ("Line 6", "6.01234E+10", "Excel changed this number: format the column as Text and export again."),
    ]
    html = response.content.decode()
    assert "2 added · 1 already on the list · 1 repeated in the file · 2 not phone numbers" in html
    assert 'data-label="Why"' in html
    entries = {o.phone: (o.reason, o.source, o.added_by) for o in OptOut.objects.all()}
    assert entries == {
        "+60123456789": ("Unsubscribed on the website", Source.IMPORT, user),  # its own reason
        "+60198765432": ("From the website", Source.IMPORT, user),  # the reason for all
        "+60132222222": ("Replied STOP", Source.PERSON, None),  # kept as it was
    }
    assert audit_rows()[1:] == [("marketer", "page", Did.OPT_OUTS_IMPORTED, "2 numbers added to the opt-out list",
                                 {"reason": "From the website", "added": 2, "already": 1, "repeated": 1, "invalid": 2})]  # fmt: skip


def test_a_headerless_file_is_numbers_in_its_first_column(admin_client):
    upload = SimpleUploadedFile("numbers.txt", b"0123456789;Aisyah\n0198765432;Ben\n")
    admin_client.post(IMPORT_URL, {"file": upload, "reason": "Old list"})
    assert set(OptOut.objects.values_list("phone", "reason")) == {
        ("+60123456789", "Old list"), ("+60198765432", "Old list")
    }  # fmt: skip


def test_an_import_without_a_reason_keeps_the_file_for_the_next_submit(admin_client):
    upload = SimpleUploadedFile(
        "windows.csv", "phone,sebab\n0123456789,Café: tak mahu lagi\n".encode("cp1252")
    )
    first = admin_client.post(IMPORT_URL, {"file": upload, "reason": ""})
    assert first.context["form"].errors == {"reason": ["This field is required."]}
    assert "Using <strong>windows.csv</strong>" in first.content.decode()
    assert not OptOut.objects.exists()

    second = admin_client.post(IMPORT_URL, {"kept": first.context["form"].kept, "reason": "Old list"})

    assert second.context["imported"].added == 1
    assert "read as Windows-1252" in second.content.decode()
    assert OptOut.objects.get().reason == "Café: tak mahu lagi"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "Choose a file of phone numbers."),  # no file chosen
        (b"name\nAisyah\n\n", None),  # a header with no phone column is a line, and not a number
        (b"\x00\x01binary", "This file is not text: save it as 'CSV UTF-8', or upload the .xlsx."),
        (b"\n\n", "The file has no phone numbers: one a line, or a column headed phone."),
    ],
)
def test_a_file_that_gives_nothing_to_import_says_why(admin_client, data, error):
    files = {"file": SimpleUploadedFile("x.csv", data)} if data else {}
    response = admin_client.post(IMPORT_URL, {**files, "reason": "x"})
    assert response.status_code == 200
    if error:
        assert response.context["form"].errors["file"] == [error]
    else:
        assert response.context["imported"].added == 0 and len(response.context["imported"].invalid) == 2
    assert not OptOut.objects.exists()


def _csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_export_has_each_entrys_source_and_is_formula_safe_in_local_time(db, settings):
    settings.TIME_ZONE = "Asia/Kuala_Lumpur"
    client, _ = login("marketer")
    blast = make_blast(1, tag="=Raya")
    listed(
        "+60123456789", reason='=HYPERLINK("http://x")', source=Source.REPLY, blast=blast, reply_text="@STOP"
    )
    OptOut.objects.update(created_at=datetime(2025, 5, 3, 6, 2, tzinfo=UTC))

    rows = _csv(client.get(EXPORT_URL))

    assert rows == [{
        "phone": "+60123456789", "added_at": "2025-05-03 14:02:00+08:00", "source": "reply",
        "reason": "'=HYPERLINK(\"http://x\")", "reply_text": "'@STOP", "blast_id": str(blast.pk),
        "blast": "'=Raya · Initial",
    }]  # fmt: skip
    assert audit_rows()[-1] == (
        "marketer",
        "page",
        Did.EXPORTED,
        "the opt-out list",
        {"filters": {}, "rows": 1},
    )


def test_the_export_has_what_the_page_found_and_its_audit_row_says_which_search(admin_client):
    listed("+60123456789", reason="From the old list")
    listed("+60198765432")
    rows = _csv(admin_client.get(EXPORT_URL, {"q": "old list"}))
    assert [row["phone"] for row in rows] == ["+60123456789"]
    assert AuditRecord.objects.get(action=Did.EXPORTED).detail == {"filters": {"q": "old list"}, "rows": 1}


def test_an_export_imports_back_as_it_was(admin_client):
    listed("+60123456789", reason="Asked by phone")
    exported = b"".join(admin_client.get(EXPORT_URL).streaming_content)
    OptOut.objects.all().delete()
    admin_client.post(
        IMPORT_URL, {"file": SimpleUploadedFile("opt-outs.csv", exported), "reason": "Restored"}
    )
    assert list(OptOut.objects.values_list("phone", "reason")) == [("+60123456789", "Asked by phone")]


# --- the API --------------------------------------------------------------------------------------------


def test_the_api_lists_searches_and_filters_newest_first(admin_client):
    listed("+60123456789", reason="From the old list")
    listed("+60198765432", source=Source.REPLY, reply_text="STOP")
    assert [row["phone"] for row in admin_client.get(API).json()["results"]] == [
        "+60198765432",
        "+60123456789",
    ]
    assert [row["phone"] for row in admin_client.get(API, {"q": "012 345 6789"}).json()["results"]] == [
        "+60123456789"
    ]
    [row] = admin_client.get(API, {"source": "reply"}).json()["results"]
    assert (row["phone"], row["source"], row["reply_text"]) == ("+60198765432", "reply", "STOP")
    assert admin_client.get(API, {"source": "nonsense"}).status_code == 400
    assert admin_client.get(API, {"page_size": 1}).json()["count"] == 2


def test_the_api_adds_a_number_as_the_person_who_asked(db):
    client, _ = login("marketer")
    response = client.post(
        API, {"phone": "012-345 6789", "reason": "Asked by phone"}, content_type="application/json"
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["phone"], body["source"], body["reason"], body["added_by"]) == (
        "+60123456789", "person", "Asked by phone", "marketer"
    )  # fmt: skip
    assert client.get(f"{API}/{body['id']}").json()["phone"] == "+60123456789"
    assert audit_rows() == [("marketer", "api", Did.OPT_OUT_ADDED, "+60123456789",
                             {"reason": "Asked by phone", "source": "person"})]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"phone": "nonsense", "reason": "x"}, {"phone": ["This is not a phone number."]}),
        ({"phone": "0123456780"}, {"reason": ["This field is required."]}),
        (
            {"phone": "0123456780", "reason": "x" * 256},
            {"reason": ["Ensure this field has no more than 255 characters."]},
        ),
        ({}, {"phone": ["This field is required."], "reason": ["This field is required."]}),
    ],
)
def test_the_api_says_which_field_is_wrong(admin_client, body, errors):
    response = admin_client.post(API, body, content_type="application/json")
    assert (response.status_code, response.json()) == (400, errors)
    assert not OptOut.objects.exists()


def test_the_api_says_a_number_is_listed_already_and_since_when(admin_client):
    listed("+60123456789")
    response = admin_client.post(API, {"phone": "0123456789", "reason": "x"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["phone"][0].startswith("+60123456789 has opted out already, since ")


def test_the_api_removes_with_a_reason_and_audits_it(db):
    client, _ = login("marketer")
    opt_out = listed("+60123456789")
    url = f"{API}/{opt_out.pk}/remove"
    assert client.post(url, {}, content_type="application/json").json() == {
        "reason": ["This field is required."]
    }
    assert OptOut.objects.exists()

    assert client.post(url, {"reason": "Asked again"}, content_type="application/json").status_code == 204

    assert not OptOut.objects.exists()
    assert audit_rows()[-1][:4] == ("marketer", "api", Did.OPT_OUT_REMOVED, "+60123456789")
    assert audit_rows()[-1][4]["reason"] == "Asked again"
    assert client.delete(f"{API}/{opt_out.pk}").status_code == 405  # only with a reason


def test_the_api_exports_csv_for_whoever_may_export_phone_numbers(db):
    listed("+60123456789", reason="From the old list")
    viewer, _ = login("viewer")
    refused = viewer.get(API, {"format": "csv"})
    assert refused.status_code == 403 and "export" in refused.json()["detail"].lower()
    marketer, _ = login("marketer")
    rows = _csv(marketer.get(API, {"format": "csv", "q": "old"}))
    assert [row["phone"] for row in rows] == ["+60123456789"]
    assert AuditRecord.objects.get(action=Did.EXPORTED).detail == {"filters": {"q": "old"}, "rows": 1}
    assert marketer.get(API, {"format": "csv", "source": "x"}).json() == {
        "source": ["Select a valid choice. x is not one of the available choices."]
    }


def test_a_viewer_reads_the_api_but_cannot_add_or_remove(db):
    client, _ = login("viewer")
    opt_out = listed("+60123456789")
    assert client.get(API).status_code == 200 and client.get(f"{API}/{opt_out.pk}").status_code == 200
    added = client.post(API, {"phone": "0198765432", "reason": "x"}, content_type="application/json")
    removed = client.post(f"{API}/{opt_out.pk}/remove", {"reason": "x"}, content_type="application/json")
    assert added.status_code == removed.status_code == 403
    assert "Can change opt-out" in added.json()["detail"]
    assert OptOut.objects.count() == 1


def test_the_api_list_takes_the_same_queries_however_many_entries(admin_client, django_assert_num_queries):
    admin_client.get(API)
    blast = make_blast(1)
    for count in (2, 20):
        for _ in range(count):
            listed(new_phone(), source=Source.REPLY, blast=blast)
        with django_assert_num_queries(4):  # session, user, the count, the page (blasts and adders joined)
            assert admin_client.get(API).status_code == 200


def test_the_schema_documents_the_opt_out_endpoints(admin_client):
    paths = json.loads(admin_client.get("/api/schema/?format=json").content)["paths"]
    assert {"get", "post"} <= set(paths["/api/opt-outs/"]) and "get" in paths["/api/opt-outs/{id}/"]
    assert paths["/api/opt-outs/{id}/"]["get"]["parameters"][0]["schema"]["pattern"] == "^[0-9]+$"
    remove = paths["/api/opt-outs/{id}/remove/"]["post"]
    assert set(remove["responses"]) == {"204", "400"} and "requestBody" in remove
    assert {p["name"] for p in paths["/api/opt-outs/"]["get"]["parameters"]} >= {
        "q",
        "source",
        "format",
        "page",
    }


# --- the admin --------------------------------------------------------------------------------------------

ADMIN_LIST = reverse("admin:blasts_optout_changelist")


def test_the_admin_finds_numbers_in_any_format_and_filters_by_source(admin_client):
    listed("+60123456789")
    listed("+60198765432", source=Source.IMPORT)
    assert [
        o.phone for o in admin_client.get(ADMIN_LIST, {"q": "012-345 6789"}).context["cl"].result_list
    ] == ["+60123456789"]
    assert [
        o.phone for o in admin_client.get(ADMIN_LIST, {"source__exact": "import"}).context["cl"].result_list
    ] == ["+60198765432"]


def test_the_admin_shows_an_entry_read_only_and_never_plainly_deletes_it(db):
    client, _ = login("superuser")
    opt_out = listed("+60123456789", reason="Asked")
    change = reverse("admin:blasts_optout_change", args=[opt_out.pk])
    page = client.get(change)
    assert page.status_code == 200 and "Asked" in page.content.decode()
    assert "delete_selected" not in page.content.decode()
    client.post(change, {"phone": "+60199999999", "reason": "forged"})
    assert (
        client.post(reverse("admin:blasts_optout_delete", args=[opt_out.pk]), {"post": "yes"}).status_code
        == 403
    )
    client.post(ADMIN_LIST, {"action": "delete_selected", "_selected_action": [opt_out.pk], "post": "yes"})
    assert list(OptOut.objects.values_list("phone", "reason")) == [("+60123456789", "Asked")]
    assert "delete_selected" not in client.get(ADMIN_LIST).content.decode()


def test_the_admin_adds_through_the_service_as_the_person(db):
    client, user = login("marketer")
    client.post(reverse("admin:blasts_optout_add"), {"phone": "012-345 6789", "reason": "Asked by phone"})
    opt_out = OptOut.objects.get()
    assert (opt_out.phone, opt_out.source, opt_out.added_by) == ("+60123456789", Source.PERSON, user)
    assert audit_rows() == [("marketer", "admin", Did.OPT_OUT_ADDED, "+60123456789",
                             {"reason": "Asked by phone", "source": "person"})]  # fmt: skip


def test_the_admins_remove_action_asks_a_reason_first(db):
    client, _ = login("marketer")
    first, second = listed("+60123456789"), listed("+60198765432")
    chosen = {"action": "remove", "_selected_action": [first.pk, second.pk]}

    asked = client.post(ADMIN_LIST, chosen)
    assert asked.status_code == 200 and "Say why" in asked.content.decode()
    refused = client.post(ADMIN_LIST, {**chosen, "apply": "1", "reason": ""})
    assert refused.status_code == 200 and refused.context["form"].errors
    assert OptOut.objects.count() == 2

    done = client.post(ADMIN_LIST, {**chosen, "apply": "1", "reason": "Asked again"}, follow=True)

    assert "Removed 2 number(s)" in done.content.decode() and not OptOut.objects.exists()
    removed = AuditRecord.objects.filter(action=Did.OPT_OUT_REMOVED, via="admin")
    assert sorted(removed.values_list("about", flat=True)) == ["+60123456789", "+60198765432"]
    assert {record.detail["reason"] for record in removed} == {"Asked again"}


def test_a_viewer_reads_the_admins_list_but_cannot_add_or_remove(db):
    client, _ = login("viewer")
    opt_out = listed("+60123456789")
    assert client.get(ADMIN_LIST).status_code == 200
    assert client.get(reverse("admin:blasts_optout_add")).status_code == 403
    client.post(
        ADMIN_LIST, {"action": "remove", "_selected_action": [opt_out.pk], "apply": "1", "reason": "x"}
    )
    assert OptOut.objects.exists() and not AuditRecord.objects.filter(action=Did.OPT_OUT_REMOVED).exists()


# --- any text ----------------------------------------------------------------------------------------------

any_text = st.text(st.characters(codec=None, categories=None), max_size=255)  # NUL and lone surrogates too
typed = st.text(st.characters(codec="utf-8"), max_size=255)  # what a browser can post


@hypothesis_settings(max_examples=40, deadline=None)
@given(reason=any_text, reply=any_text)
def test_any_text_in_a_reason_or_a_stop_reply_is_stored_and_shown(admin_client, reason, reply):
    OptOut.objects.all().delete()
    response = admin_client.post(
        API, {"phone": "0123456789", "reason": reason}, content_type="application/json"
    )
    if reason.strip() and clean_text(reason) == reason:  # DRF refuses a NUL or a lone surrogate, in words
        assert response.status_code == 201, response.content
        assert OptOut.objects.get(phone="+60123456789").reason == clean_text(reason.strip())
    else:
        assert response.status_code == 400
    phone = new_phone()
    body = json.dumps({"type": "text", "from": phone.lstrip("+") + "@c.us", "message": "STOP " + reply})
    stored = Client().post(
        "/api/webhook/wsapme", body, content_type="application/json", headers={"X-Webhook-Token": SECRET}
    )
    assert stored.json() == {"received": 1}
    assert not OptOut.objects.filter(phone=phone).exists()  # stored, not applied yet
    apply_events()
    assert OptOut.objects.get(phone=phone).reply_text.startswith("STOP")
    assert admin_client.get(LIST_URL).status_code == 200
    assert admin_client.get(LIST_URL, {"q": clean_text(reply)}).status_code == 200
    assert admin_client.get(EXPORT_URL).status_code == 200


@hypothesis_settings(max_examples=25, deadline=None)
@given(reason=typed)
def test_any_typed_reason_on_the_page_and_in_an_import_is_stored(admin_client, reason):
    OptOut.objects.all().delete()
    admin_client.post(LIST_URL, {"phone": "0123456789", "reason": reason})
    upload = SimpleUploadedFile("a.csv", b"0198765432\n")
    admin_client.post(IMPORT_URL, {"file": upload, "reason": reason})
    stored = set(OptOut.objects.values_list("reason", flat=True))
    assert stored == ({clean_text(reason.strip())} if reason.strip() and "\x00" not in reason else set())
