"""The new-blast page (issue 18, items 1, 3 and 4): a previewed file is kept, names have fallbacks,
and bad lines are shown beside the good ones instead of blocking them. The browser journey is in
test_browser.py; these pin the rules underneath."""

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from blasts.models import Blast
from blasts.recipients import Recipient, message_render, messages_preview, parse_recipients
from blasts.services import blast_create

FORM = {
    "tag": "Raya",
    "follow_up_stage": "Initial",
    "message": "Salam {first_name|Tuan/Puan}!",
    "device": "5850",
}


@pytest.mark.parametrize(
    ("template", "name", "text"),
    [
        ("Salam {first_name|Tuan/Puan}!", "", "Salam Tuan/Puan!"),
        ("Salam {first_name|Tuan/Puan}!", "Aisyah Rahman", "Salam Aisyah!"),
        ("Hi {name|there}, {first_name}", "", "Hi there, "),
        ("Hi {name|}", "", "Hi "),
        ("Call {phone|x}", "", "Call +60123456789"),
        ("{city|your area} without the attribute", "Ali", "your area without the attribute"),
    ],
)
def test_a_fallback_speaks_for_a_recipient_without_a_name(template, name, text):
    assert message_render(template, Recipient("+60123456789", name)) == text


def test_a_placeholder_no_recipient_has_is_refused_with_or_without_a_fallback(db):
    recipients = parse_recipients([("Line 1", "+60123456789", "Ali", {"city": "Ipoh"})])
    blast_create(tag="t", message="Salam {first_name|Tuan/Puan}, {name} of {city}", recipients=recipients,
                 device="d")  # fmt: skip
    with pytest.raises(ValidationError, match=r"\{nama\}"):
        blast_create(tag="t", message="Salam {nama|Tuan}", recipients=recipients, device="d")
    assert Blast.objects.count() == 1


def test_the_preview_counts_the_nameless_and_each_distinct_text():
    recipients = [Recipient(f"+6012345000{i}", "Ali" if i < 2 else " ") for i in range(5)]
    blank = messages_preview("Salam {first_name}!", recipients)
    assert (blank.texts, blank.without_name, blank.fallback) == (
        [("Salam !", 3), ("Salam Ali!", 2)],
        3,
        False,
    )
    assert messages_preview("Salam {first_name|Tuan}!", recipients).fallback is True
    assert messages_preview("Salam!", recipients).without_name == 0  # no name asked for: nothing to warn


def test_only_the_valid_ones_are_kept_and_none_valid_is_an_error():
    parsed = parse_recipients([("Line 1", "0123456789", ""), ("Line 2", "12345", "")])
    assert [r.phone for r in parsed.valid_only().recipients] == ["+60123456789"]
    assert parsed.valid_only().errors == []
    assert parse_recipients([("Line 1", "12345", "")]).valid_only().errors == [
        "No recipients: none of the lines is a phone number."
    ]


def test_create_without_a_preview_names_the_bad_line_and_points_to_the_preview(admin_client):
    response = admin_client.post(reverse("blast-new"), {**FORM, "recipients_text": "0123456789\n12345"})
    errors = response.context["form"].errors["recipients_text"]
    assert errors[0] == "Line 2: '12345' is too short."
    assert "create the blast with the 1 valid recipients" in errors[1]
    assert not Blast.objects.exists()


def test_create_with_the_valid_ones_leaves_the_bad_lines_out(admin_client):
    data = {**FORM, "recipients_text": "0123456789\n12345\n0198765432", "create_valid": "1"}
    response = admin_client.post(reverse("blast-new"), data)
    assert response.status_code == 302
    assert sorted(Blast.objects.get().recipients.values_list("phone", flat=True)) == [
        "+60123456789",
        "+60198765432",
    ]


def test_a_file_kept_by_a_preview_is_used_by_create_and_a_forged_one_is_not(admin_client):
    upload = SimpleUploadedFile("list.csv", b"phone,name\n0123456789,Ali\n")
    preview = admin_client.post(reverse("blast-new"), {**FORM, "preview": "1", "recipients_file": upload})
    kept = preview.context["form"].kept
    assert kept and "0123456789" not in kept  # signed and compressed, not the rows in the clear

    forged = admin_client.post(
        reverse("blast-new"), {**FORM, "create": "1", "recipients_kept": kept[:-2] + "xx"}
    )
    assert forged.context["form"].errors["recipients_text"] == [
        "No recipients: give at least one phone number."
    ]
    assert (
        admin_client.post(reverse("blast-new"), {**FORM, "create": "1", "recipients_kept": kept}).status_code
        == 302
    )
    assert Blast.objects.get().recipients.get().name == "Ali"


def test_a_reversed_date_range_is_a_400_naming_the_field(admin_client):
    response = admin_client.get("/api/blasts", {"date_from": "2026-12-05", "date_to": "2026-12-01"})
    assert response.status_code == 400
    assert response.json() == {"date_to": ["To (01 Dec 2026) is before From (05 Dec 2026): swap them."]}


# --- the files marketers have (issue 18, item 5) ------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "recipients"


@pytest.mark.parametrize(
    ("file", "recipients", "errors"),
    [
        ("google_contacts.csv", [("+60123456789", "Aisyah Rahman"), ("+60129876543", "Wei Ming Tan")], []),
        ("excel_utf8_bom.csv", [("+60123456789", "Siti Nurhaliza"), ("+60198765432", "Tan, Ah Kow")], []),
        ("semicolon.csv", [("+60123456789", "Ali bin Abu"), ("+60198765432", "Nurul Izzah")], []),
        ("malay_headers.csv", [("+60123456789", "Siti"), ("+60198765432", "Ahmad")], []),
        ("contacts.xlsx", [("+60123456789", "Aminah"), ("+60198765432", "Kumar")], []),
        ("windows_1252.csv", [("+60123456789", "Renée")], []),
        ("excel_unicode_text.txt", [("+60123456789", "Zoë")], []),
        (
            "excel_scientific.csv",
            [("+60123456789", "Tan")],
            [
                "CSV line 2: '6.01235E+10': Excel changed this number: format the column as Text and export again."
            ],
        ),
    ],
)
def test_the_files_marketers_have_are_read(admin_client, file, recipients, errors):
    upload = SimpleUploadedFile(file, (FIXTURES / file).read_bytes())
    response = admin_client.post(reverse("blast-new"), {**FORM, "preview": "1", "recipients_file": upload})
    form = response.context["form"]
    assert [(r.phone, r.name) for r in form.parsed.recipients] == recipients
    assert form.parsed.errors == errors
    assert ("Windows-1252" in form.file_note) is (file == "windows_1252.csv")


def test_a_broken_excel_file_is_refused_with_what_to_do(admin_client):
    upload = SimpleUploadedFile("contacts.xlsx", b"PK\x03\x04 not really a workbook")
    response = admin_client.post(reverse("blast-new"), {**FORM, "preview": "1", "recipients_file": upload})
    assert response.context["form"].errors["recipients_file"] == [
        "This Excel file could not be read: save it again from Excel, or as 'CSV UTF-8'."
    ]


def test_a_pasted_line_with_a_quoted_comma_keeps_the_whole_name(admin_client):
    data = {**FORM, "preview": "1", "recipients_text": '0123456789,"Tan, Ah Kow"'}
    parsed = admin_client.post(reverse("blast-new"), data).context["form"].parsed
    assert [(r.phone, r.name) for r in parsed.recipients] == [("+60123456789", "Tan, Ah Kow")]
