import pytest

from blasts.models import BlastRecipient
from blasts.recipients import Recipient, message_render, normalize_phone, parse_recipients, rows_from_text


@pytest.mark.parametrize(
    "raw", ["+60123456789", "60123456789", "0123456789", "012-345 6789", "+60 12-345 6789", " 012 3456789 "]
)
def test_malaysian_numbers_in_any_common_spelling_become_e164(raw):
    assert normalize_phone(raw) == "+60123456789"


def test_numbers_with_a_country_code_keep_it():
    assert normalize_phone("+65 9123 4567") == "+6591234567"


def test_the_default_region_comes_from_settings(settings):
    settings.PHONE_DEFAULT_REGION = "SG"
    assert normalize_phone("9123 4567") == "+6591234567"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("abc", "not a phone number"), ("123", "too short"), ("+60 12 3456 7890 1234", "too long")],
)
def test_invalid_numbers_say_why(raw, reason):
    with pytest.raises(ValueError, match=reason):
        normalize_phone(raw)


def test_pasted_lines_with_and_without_names():
    rows = rows_from_text("0123456789,Aisyah\n\n+60198765432\n  01112345678 , Tan Wei Ming \n")
    assert rows == [
        ("Line 1", "0123456789", "Aisyah", {}),
        ("Line 3", "+60198765432", "", {}),
        ("Line 4", "01112345678", "Tan Wei Ming", {}),
    ]


def test_csv_header_is_skipped_and_columns_found_by_name():
    text = "name,phone number,City,Last Order\nAisyah,0123456789,Ipoh,\n"
    assert rows_from_text(text, label="CSV line") == [
        ("CSV line 2", "0123456789", "Aisyah", {"city": "Ipoh"})
    ]


def test_duplicates_are_dropped_and_counted():
    parsed = parse_recipients(rows_from_text("0123456789,A\n+60123456789,B\n60123456789\n0198765432"))
    assert parsed.recipients == [Recipient("+60123456789", "A"), Recipient("+60198765432", "")]
    assert (parsed.duplicates, parsed.errors) == (2, [])


def test_every_invalid_line_is_named():
    parsed = parse_recipients(rows_from_text("0123456789\nnot a number\n0198765432\n123,Bob"))
    assert parsed.errors == ["Line 2: 'not a number' is not a phone number.", "Line 4: '123' is too short."]


def test_an_empty_list_is_an_error():
    assert parse_recipients(rows_from_text("\n \n")).errors == [
        "No recipients: give at least one phone number."
    ]


def test_more_than_the_limit_names_the_first_line_over_it(settings):
    settings.BLAST_MAX_RECIPIENTS = 2
    parsed = parse_recipients(rows_from_text("0123456789\n0123456789\n0198765432\n01112345678\n01112345679"))
    assert parsed.errors == [
        "Too many recipients: 4 after removing duplicates; the limit per blast is 2 (Line 4 is the first over it)."
    ]


def test_an_overlong_name_is_an_error():
    parsed = parse_recipients([("Recipient 0", "0123456789", "x" * 101)])
    assert parsed.errors == ["Recipient 0: the name is longer than 100 characters."]


def test_messages_are_personalised_per_recipient():
    recipient = BlastRecipient(phone="+60123456789", name="Aisyah binti Ali")
    template = "Hi {first_name} ({name}, {phone}) - {city|your town} {product}"
    assert message_render(template, recipient) == "Hi Aisyah (Aisyah binti Ali, +60123456789) - your town "
    with_attributes = Recipient("+60123456789", "Aisyah", {"city": "Ipoh", "product": "Baju"})
    assert message_render(template, with_attributes) == "Hi Aisyah (Aisyah, +60123456789) - Ipoh Baju"
    assert message_render("Hi {name}!", BlastRecipient(phone="+60123456789")) == "Hi !"
