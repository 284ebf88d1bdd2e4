"""Contact import (issue 19, item 2): files read as tolerantly as the blast upload, columns mapped
(Google Contacts and Outlook exports as they are), every row merged by the one rule, bad rows listed
by their row number, exact counts; the page, the API and the command over the one service."""

import io
import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from blasts.audit import SYSTEM, Did
from blasts.contacts import import_files, import_views, imports
from blasts.contacts.book import ContactIn, contacts_upsert
from blasts.contacts.imports import Entry, ImportFileError, Mapping, contacts_import, table_open
from blasts.models import AuditRecord, Contact

FIXTURES = Path(__file__).parent / "fixtures"
URL = "/contacts/import/"
API = "/api/contacts/import"


@pytest.fixture(autouse=True)
def _kept_here(tmp_path, monkeypatch):
    monkeypatch.setattr(import_files, "KEPT_DIR", tmp_path / "kept")


def read(data: bytes, name: str = "contacts.csv"):
    """The rows a file gives, as the import reads them: (row, phone, name, attributes, tags)."""
    table = table_open(io.BytesIO(data), name)
    mapping = Mapping.guess(table.header)
    return table, [
        (e.row, e.phone, e.name, e.attributes, e.tags)
        for n, cells in table.rows()
        for e in [mapping.read(n, cells)]
    ]


def run(text: str, *, tags=(), batch=imports.BATCH):
    table = table_open(io.BytesIO(text.encode()), "t.csv")
    return imports.contacts_import(
        rows=table.rows(), mapping=Mapping.guess(table.header), tags=tags, by=SYSTEM, batch=batch
    )


def contact(phone: str) -> Contact:
    return Contact.objects.get(phone=phone)


def tags_of(phone: str) -> set[str]:
    return set(contact(phone).tags.values_list("name", flat=True))


def login(role: str) -> Client:
    user = User.objects.create_user(role, is_staff=True)
    user.groups.add(Group.objects.get(name=role.title()))
    client = Client()
    client.force_login(user)
    return client


# --- the merge rule, through the import ---------------------------------------------------------


def test_the_same_number_in_several_formats_is_one_contact(db):
    summary = run("phone,name\n012-345 6789,A\n+60123456789,B\n60123456789,\n+60 12 345 6789,D\n")

    assert Contact.objects.count() == 1
    assert contact("+60123456789").name == "D"  # the last row with a name
    assert (summary.created, summary.duplicates, summary.rows) == (1, 3, 4)


def test_a_name_given_now_wins_and_an_empty_name_keeps_the_old_one(db):
    contacts_upsert([ContactIn("+60123456789", "Old Name"), ContactIn("+60198765432", "Kept")])

    summary = run("phone,name\n0123456789,New Name\n0198765432,\n")

    assert contact("+60123456789").name == "New Name"
    assert contact("+60198765432").name == "Kept"
    assert (summary.updated, summary.unchanged) == (1, 1)


def test_attributes_merge_and_tags_are_added(db):
    contacts_upsert([ContactIn("+60123456789", "Ali", {"city": "Ipoh", "product": "Baju"}, ["VIP"])])

    run("phone,City,Last Order,Tags\n0123456789,Klang,2026-03-01,Raya; Walk-in|VIP\n", tags=["Import March"])

    person = contact("+60123456789")
    assert person.attributes == {"city": "Klang", "product": "Baju", "last_order": "2026-03-01"}
    assert tags_of(person.phone) == {"VIP", "Raya", "Walk-in", "Import March"}
    assert person.name == "Ali"


# --- files as people have them -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "rows", "note"),
    [
        ("semicolon.csv", [("012-3456789", "Ali bin Abu"), ("019-8765432", "Nurul Izzah")], ""),
        ("excel_utf8_bom.csv", [("0123456789", "Siti Nurhaliza"), ("0198765432", "Tan, Ah Kow")], ""),
        ("windows_1252.csv", [("0123456789", "Renée")], "Windows-1252"),
        ("excel_unicode_text.txt", [("0123456789", "Zoë")], ""),
        (
            "contacts.xlsx",
            [("60123456789", "Aminah"), ("0198765432", "Kumar")],
            "",
        ),  # a number cell, a text cell
        ("malay_headers.csv", [("0123456789", "Siti"), ("0198765432", "Ahmad")], ""),
    ],
)
def test_files_are_read_whatever_their_delimiter_encoding_or_format(fixture, rows, note):
    table, read_rows = read((FIXTURES / "recipients" / fixture).read_bytes(), fixture)

    assert [(phone, name) for _, phone, name, _, _ in read_rows] == rows
    assert note in table.note and bool(table.note) == bool(note)
    assert table.total == len(rows)


def test_the_google_contacts_export_is_mapped_as_it_is():
    table, rows = read((FIXTURES / "contacts" / "google_contacts.csv").read_bytes())

    fields = dict(zip(table.header, Mapping.guess(table.header).fields, strict=True))
    assert fields["Phone 1 - Value"] == "phone" and fields["Labels"] == "tags"
    assert (fields["First Name"], fields["Last Name"]) == ("given", "family")
    assert fields["Phone 1 - Label"] == fields["Phonetic First Name"] == fields["Photo"] == "ignore"
    assert rows == [
        (2, "+60 12-111 2222 ::: 03-7956 1234", "Siti Aminah",
         {"company": "Butik Siti", "email": "siti@example.my"}, ["Pelanggan", "starred"]),
        (3, "0133334444", "Ah Kow Tan", {"notes": "Prefers Mandarin"}, []),
    ]  # fmt: skip


def test_the_older_google_export_takes_the_full_name_and_the_mobile_of_several_numbers(db):
    text = (FIXTURES / "recipients" / "google_contacts.csv").read_text()
    run(text)
    assert contact("+60123456789").name == "Aisyah Rahman"  # the mobile, not the landline first in the cell
    assert contact("+60129876543").name == "Wei Ming Tan"
    assert contact("+60129876543").attributes == {"phone_2_value": "03-7956 1234"}


def test_the_outlook_export_is_mapped_as_it_is(db):
    table, rows = read((FIXTURES / "contacts" / "outlook.csv").read_bytes())

    fields = Mapping.guess(table.header).fields
    assert fields.count("phone") == 1 and table.header[fields.index("phone")] == "Mobile Phone"
    assert rows[0] == (
        2,
        "+60 12-345 6789",  # not the business phone, a column before it
        "Nur Aina Ismail",
        {
            "email": "aina@example.my",
            "business_phone": "03-2161 2345",
            "company": "Kedai Aina",
            "home_city": "Ipoh",
        },
        ["VIP", "Raya 2026"],
    )
    assert rows[1][1:4] == ("019-876 5432", "Rajesh Kumar", {"home_city": "Klang"})


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"phone,name\n\x00\x01\x02\x03binary", "x.csv", "not text"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "old.xls", "old Excel file"),
        (b"PK\x03\x04 not really a workbook", "x.xlsx", "Excel file could not be read"),
        (b"\n \n", "empty.csv", "empty"),
        (b"phone,name\n", "header.csv", "no rows under the header"),
        (b'phone,name\n0123456789,"open quote\n' + b"x" * 140_000, "q.csv", "Row 2 could not be read"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_in_words(data, name, message):
    with pytest.raises(ImportFileError, match=message):
        table_open(io.BytesIO(data), name)


def test_a_header_under_title_rows_is_found_and_numbers_count_from_the_files_first_row():
    data = b'Customer list March\n\nNo. HP;Nama;Nota\n0123456789;Ali;"two\nlines"\n\n0198765432;Abu;\n'
    table, rows = read(data)
    assert (table.header_row, table.header, table.total) == (3, ["No. HP", "Nama", "Nota"], 2)
    assert [(row, phone) for row, phone, *_ in rows] == [(4, "0123456789"), (6, "0198765432")]


# --- rows that are not contacts, and the counts ---------------------------------------------------


def test_invalid_rows_are_listed_with_their_row_numbers_and_why(db):
    summary = run("phone,name\n0123456789,Ali\n123,Short\n\n6.01235E+10,Excel\n,No number\nabc,Words\n")

    assert [(e.row, e.phone) for e in summary.errors] == [(3, "123"), (5, "6.01235E+10"), (6, ""), (7, "abc")]
    assert [str(e) for e in summary.errors] == [
        "Row 3: '123' is too short.",
        "Row 5: '6.01235E+10': Excel changed this number: format the column as Text and export again.",
        "Row 6: No phone number.",
        "Row 7: 'abc' is not a phone number.",
    ]
    assert (summary.invalid, summary.created, Contact.objects.count()) == (4, 1, 1)


def test_the_counts_are_exact_and_add_up_when_duplicates_span_batches(db):
    contacts_upsert([ContactIn("+60120000001", "Same"), ContactIn("+60120000002", "Old")])
    rows = [
        "+60120000001,Same",  # unchanged
        "+60120000002,New",  # updated
        "+60120000003,A",  # created
        "0120000003,A again",  # duplicate within the batch
        "+60120000004,B",  # created (second batch)
        "bad,C",  # invalid
        "+60120000001,Later",  # duplicate of a number of the first batch: merged into it
        "+60120000005,",  # created
    ]
    summary = run("phone,name\n" + "\n".join(rows) + "\n", batch=2)

    assert summary.counts() == {
        "rows": 8, "created": 3, "updated": 1, "unchanged": 1, "duplicates": 2, "invalid": 1,
    }  # fmt: skip
    assert summary.rows == summary.contacts + summary.duplicates + summary.invalid
    assert contact("+60120000001").name == "Later" and contact("+60120000003").name == "A again"
    assert Contact.objects.count() == 5


def test_only_the_first_errors_are_kept_but_every_one_is_counted(db, monkeypatch):
    monkeypatch.setattr(imports, "ERRORS_KEPT", 2)
    summary = run("phone\n1\n2\n3\n4\n")
    assert (summary.invalid, [e.row for e in summary.errors], summary.errors_left_out) == (4, [2, 3], 2)


def test_an_import_leaves_one_audit_row_with_its_counts_and_reports_progress(db):
    done = []
    table = table_open(io.BytesIO(b"phone\n0123456789\n0198765432\nx\n"), "march.csv")
    imports.contacts_import_file(
        table=table, mapping=Mapping.guess(table.header), tags=["T"], by=SYSTEM, progress=done.append
    )
    (record,) = AuditRecord.objects.filter(action=Did.CONTACTS_IMPORTED)
    assert record.about == "march.csv"
    assert record.detail == {"rows": 3, "created": 2, "updated": 0, "unchanged": 0, "duplicates": 0,
                             "invalid": 1, "tags": ["T"]}  # fmt: skip
    assert done and done[-1] == 3


def test_a_mapping_names_its_problems():
    header = ["Telefon", "Nama", "City", "Bandar"]
    assert Mapping(["ignore", "name", "ignore", "ignore"]).problems() == [
        "Choose the column that holds the phone numbers."
    ]
    assert (
        "Two columns are the same attribute: city."
        in Mapping.chosen(header, {"Bandar": "attribute:City"}).problems()
    )
    assert Mapping(["phone", "phone", "attribute:name"]).problems() == [
        "Choose one phone column only: the others can be attributes.",
        "name is the contact's own: choose another attribute name.",
    ]
    with pytest.raises(ValueError, match="There is no column 'Mobile'"):
        Mapping.chosen(header, {"Mobile": "phone"})
    with pytest.raises(ValueError, match="'surname'"):
        Mapping.chosen(header, {"Nama": "surname"})


@hypothesis_settings(max_examples=40)
@given(
    name=st.text(max_size=120),
    key=st.text(min_size=1, max_size=30),
    value=st.text(max_size=600),
    tag=st.text(max_size=120),
)
def test_any_text_in_names_attributes_and_tags_is_stored(db, name, key, value, tag):
    """NUL characters, emoji and lone surrogates included: on PostgreSQL as on SQLite."""
    phone = "+60123456789"
    entry = Entry(0, phone, name + "\x00\ud800😀", {key: value + "\x00", "emoji😀\ud83d": "\udfff"}, [tag])
    summary = contacts_import(rows=[entry], by=SYSTEM)

    assert summary.contacts == 1
    stored = contact(phone)
    assert "\x00" not in stored.name and len(stored.name) <= 100
    assert all("\x00" not in text for pair in stored.attributes.items() for text in pair)


# --- the page ----------------------------------------------------------------------------------------


def upload(client, data: bytes, name: str = "march.csv"):
    return client.post(URL, {"file": SimpleUploadedFile(name, data, content_type="text/csv")})


def test_the_page_uploads_maps_and_imports_keeping_the_file_between_the_steps(admin_client, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # streamed to a temporary file, as a large upload is
    step1 = admin_client.get(URL)
    assert step1.status_code == 200 and b'type="file"' in step1.content

    step2 = upload(admin_client, b"Nama,No. Telefon,Bandar,Nota\nSiti,0123456789,Ipoh,x\nAbu,012,Klang,y\n")
    form = step2.context["mapping"]
    assert [field.value() for field, _ in form.columns] == [
        "name",
        "phone",
        "attribute:bandar",
        "attribute:nota",
    ]
    assert form.columns[0][1] == ["Siti", "Abu"]  # the first values under Nama
    assert Contact.objects.count() == 0  # nothing imported before the columns are chosen

    kept = form.initial["kept"]
    choice = {"kept": kept, "column_0": "name", "column_1": "phone", "column_2": "attribute:bandar"}
    step3 = admin_client.post(URL, choice | {"column_3": "ignore", "tags": "Raya, Walk-in"})  # no file again

    summary = step3.context["summary"]
    assert (summary.created, summary.invalid) == (1, 1)
    page = step3.content.decode()
    assert (
        '<td class="number" data-label="Row">3</td>' in page
        and "is too short." in page
        and 'id="import-summary"' in page
    )
    assert contact("+60123456789").attributes == {"bandar": "Ipoh"}
    assert tags_of("+60123456789") == {"Raya", "Walk-in"}
    again = admin_client.post(URL, choice | {"column_3": "ignore"})  # the same form sent twice
    assert (
        "upload it again" in again.content.decode()
        and AuditRecord.objects.filter(action=Did.CONTACTS_IMPORTED).count() == 1
    )


def test_a_tampered_token_is_refused_and_nothing_is_imported(admin_client):
    kept = upload(admin_client, b"phone\n0123456789\n").context["mapping"].initial["kept"]
    for token in (kept[:-2] + "xx", import_files.signing.dumps({"key": "../../etc/passwd", "name": "x"},
                                                                 salt=import_files.KEPT_SALT)):  # fmt: skip
        response = admin_client.post(URL, {"kept": token, "column_0": "phone"})
        assert response.status_code == 200
        assert "upload it again" in response.context["upload"].non_field_errors()[0]
    assert Contact.objects.count() == 0


def test_the_page_says_what_is_wrong_with_a_file_or_a_mapping(admin_client, monkeypatch):
    bad = upload(admin_client, b"\x00\x01binary")
    assert "This file is not text" in bad.content.decode() and 'class="error-summary"' in bad.content.decode()

    monkeypatch.setattr(import_views, "UPLOAD_MAX_BYTES", 10)
    assert "larger than" in upload(admin_client, b"phone\n0123456789\n").context["upload"].errors["file"][0]
    monkeypatch.undo()
    monkeypatch.setattr(import_files, "KEPT_DIR", import_files.KEPT_DIR)

    kept = upload(admin_client, b"phone,name\n0123456789,A\n").context["mapping"].initial["kept"]
    wrong = admin_client.post(URL, {"kept": kept, "column_0": "ignore", "column_1": "name"})
    assert wrong.context["mapping"].non_field_errors() == ["Choose the column that holds the phone numbers."]
    assert 'href="#mapping"' in wrong.content.decode()
    fixed = admin_client.post(URL, {"kept": kept, "column_0": "phone", "column_1": "name"})  # still kept
    assert fixed.context["summary"].created == 1


def test_a_viewer_may_not_open_or_post_the_import_page(db):
    viewer = login("viewer")
    assert viewer.get(URL).status_code == 403
    assert upload(viewer, b"phone\n0123456789\n").status_code == 403
    assert login("marketer").get(URL).status_code == 200
    assert Contact.objects.count() == 0


def test_the_pages_steps_take_a_fixed_number_of_queries(admin_client, django_assert_num_queries):
    admin_client.get(URL)  # the session and user cached as any page would
    with django_assert_num_queries(2):  # the session and the user
        admin_client.get(URL)
    with django_assert_num_queries(2):
        kept = upload(admin_client, b"phone\n0123456789\n0198765432\n").context["mapping"].initial["kept"]
    with django_assert_num_queries(8):  # + one batch of new contacts (3, in a savepoint) and the audit row
        admin_client.post(URL, {"kept": kept, "column_0": "phone"})


# --- the API --------------------------------------------------------------------------------------------


def test_the_api_imports_a_json_list_and_lists_the_invalid_by_index(admin_client):
    body = [
        {"phone": "012-345 6789", "name": "Aisyah", "tags": ["VIP"], "attributes": {"City": "Ipoh"}},
        {"phone": "nope"},
        {"phone": "+60123456789", "attributes": {"product": "Baju"}},
    ]
    response = admin_client.post(API, body, content_type="application/json")

    assert response.status_code == 200
    assert response.json() == {
        "rows": 3, "created": 1, "updated": 0, "unchanged": 0, "duplicates": 1, "invalid": 1,
        "errors": [{"row": 1, "phone": "nope", "why": "'nope' is not a phone number."}], "note": "",
    }  # fmt: skip
    assert contact("+60123456789").attributes == {"city": "Ipoh", "product": "Baju"}
    assert tags_of("+60123456789") == {"VIP"}
    assert admin_client.post(API, [], content_type="application/json").json()["rows"] == 0


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"phone": "0123456789"}, {"non_field_errors": ['Expected a list of items but got type "dict".']}),
        ([{"phone": "0123456789"}, {"name": "x"}], {"1": {"phone": ["This field is required."]}}),
        (
            [{"phone": "0123456789", "tags": "VIP"}],
            {"0": {"tags": ['Expected a list of items but got type "str".']}},
        ),
        (
            [{"phone": "0123456789", "attributes": ["x"]}],
            {"0": {"attributes": ['Expected a dictionary of items but got type "list".']}},
        ),
    ],
)
def test_the_api_refuses_a_wrong_shape_by_field_and_writes_nothing(admin_client, body, errors):
    response = admin_client.post(API, body, content_type="application/json")
    assert (response.status_code, response.json()) == (400, errors)
    assert Contact.objects.count() == 0


def test_the_api_imports_a_file_with_a_mapping_and_tags(admin_client, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # streamed to a temporary file, as a large upload is
    data = "Telefon;Nama;Kedai\n0123456789;Siti;KL\n".encode("cp1252")
    response = admin_client.post(API, {
        "file": SimpleUploadedFile("m.csv", data), "mapping": json.dumps({"Kedai": "attribute:store"}),
        "tags": ["Raya", "Walk-in"],
    })  # fmt: skip

    assert response.status_code == 200, response.json()
    assert response.json()["created"] == 1
    assert contact("+60123456789").attributes == {"store": "KL"}
    assert tags_of("+60123456789") == {"Raya", "Walk-in"}


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({}, {"file": ["No file was submitted."]}),
        (
            {"file": b"\x00binary"},
            {"file": ["This file is not text: save it as 'CSV UTF-8', or upload the .xlsx."]},
        ),
        ({"file": b"phone\n1\n", "mapping": "{"}, {"mapping": ['Give JSON: {"column header": "phone", …}.']}),
        (
            {"file": b"phone\n1\n", "mapping": "[1]"},
            {"mapping": ['Give a JSON object: {"column header": "phone", …}.']},
        ),
        (
            {"file": b"phone\n1\n", "mapping": '{"phone": "ignore"}'},
            {"mapping": ["Choose the column that holds the phone numbers."]},
        ),
        (
            {"file": b"phone\n1\n", "mapping": '{"Mobile": "phone"}'},
            {"mapping": ["There is no column 'Mobile': the columns are phone."]},
        ),
    ],
)
def test_the_api_refuses_a_bad_file_or_mapping_by_field(admin_client, fields, errors):
    if "file" in fields:
        fields["file"] = SimpleUploadedFile("c.csv", fields["file"])
    response = admin_client.post(API, fields)
    assert (response.status_code, response.json()) == (400, errors)


def test_the_api_answers_413_for_too_much_and_415_for_another_content_type(
    admin_client, settings, monkeypatch
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    big = [{"phone": "0123456789", "name": "x" * 100}]
    assert admin_client.post(API, big, content_type="application/json").status_code == 413
    monkeypatch.setattr(import_views, "UPLOAD_MAX_BYTES", 10)
    assert (
        admin_client.post(API, {"file": SimpleUploadedFile("c.csv", b"phone\n0123456789\n")}).status_code
        == 413
    )
    assert admin_client.post(API, "phone\n0123456789", content_type="text/csv").status_code == 415
    assert (
        admin_client.post(
            API, "phone=0123456789", content_type="application/x-www-form-urlencoded"
        ).status_code
        == 415
    )
    assert Contact.objects.count() == 0


def test_a_viewer_may_not_import_through_the_api(db):
    response = login("viewer").post(API, [{"phone": "0123456789"}], content_type="application/json")
    assert response.status_code == 403 and "blasts.add_contact" in response.json()["detail"]
    assert Contact.objects.count() == 0


def test_the_import_is_in_the_api_schema(admin_client):
    schema = admin_client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/contacts/import/"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"200", "400", "413", "415"} <= set(operation["responses"])
    assert reverse("contact-import-api") == API


# --- the command -----------------------------------------------------------------------------------


def command(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_contacts", *map(str, args), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_imports_with_a_progress_bar_and_a_one_line_summary(db, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("No HP,Nama,Bandar\n0123456789,Siti,Ipoh\n0123456789,Siti A,\nbad,X,Y\n")

    out, err = command(path, "--tag", "Walk-in", "--map", "Bandar=attribute:city")

    assert out == "list.csv: 3 rows: 1 created, 0 updated, 0 unchanged, 1 duplicates merged, 1 invalid\n"
    assert "3/3" in err and "row/s" in err and "Row 4: 'bad' is not a phone number." in err
    assert contact("+60123456789").attributes == {"city": "Ipoh"} and tags_of("+60123456789") == {"Walk-in"}


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "Cannot read"),
        (b"name,city\nA,B\n", [], "Choose the column that holds the phone numbers. Its columns: name, city"),
        (b"\x00\x01", [], "This file is not text"),
        (b"phone\n1\n", ["--map", "phone"], "write it as COLUMN=FIELD"),
        (b"phone\n1\n", ["--map", "phone=mobile"], "phone='mobile'"),
    ],
)
def test_the_command_stops_with_one_clear_line(db, tmp_path, content, args, message):
    path = tmp_path / "c.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CommandError, match=message):
        command(path, *args)
    assert Contact.objects.count() == 0
