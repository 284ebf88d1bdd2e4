"""Recipient input: phone numbers parsed with phonenumbers and stored as E.164.

Marketers paste `phone` or `phone,name` lines, upload a CSV, or send a JSON list.
Every problem is reported with its line (or index) and nothing is created.
"""

import csv
import hashlib
import io
import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import phonenumbers
from django.conf import settings

from .models import PLACEHOLDER, PLACEHOLDERS

NAME_MAX_LENGTH = 100
NAMED = ("name", "first_name")  # the placeholders a missing name leaves blank

_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too short",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length",
}


def normalize_phone(raw: str, region: str | None = None) -> str:
    """Return `raw` as E.164 (+60123456789), or raise ValueError saying why it is not a number."""
    try:
        number = phonenumbers.parse(raw, region or settings.PHONE_DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        reason = phonenumbers.is_possible_number_with_reason(number)
        raise ValueError(_REASONS.get(reason, "not a valid number for its country"))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def attribute_key(header: str) -> str:
    """A column header as an attribute's key, usable as a placeholder: "Last Order" -> "last_order"."""
    return re.sub(r"\W+", "_", header.strip().lower()).strip("_")[:50]


def attribute_placeholders(template: str) -> list[str]:
    """The contact attributes a message uses ({city}, {product|our range}), in order, each once."""
    found = PLACEHOLDER.finditer(template)
    keys = (match[1] for match in found if match[1] not in PLACEHOLDERS and _is_placeholder(match))
    return list(dict.fromkeys(keys))


def message_render(template: str, recipient) -> str:
    """The message with {name}, {first_name}, {phone} and attributes ({city}) filled in for one
    recipient; where the recipient has no such value, {first_name|Tuan/Puan} gives the fallback
    after the bar (else nothing)."""
    name = recipient.name.strip()
    values = {**recipient.attributes, "name": name, "first_name": name.split(" ")[0] if name else ""}
    values["phone"] = recipient.phone

    def fill(match: re.Match) -> str:
        placeholder, fallback = match.groups()
        return str(values.get(placeholder, "")).strip() or (fallback or "")

    return PLACEHOLDER.sub(fill, template)


# Varied wording: `{Salam|Hi|Hello}` in a message is one of its options per recipient, the same one
# every time that recipient's message is made (the draw is seeded by the number and the text). A
# group reads as a placeholder, not a choice, when it starts with name, first_name, phone or a
# lowercase attribute key and has at most one bar ({first_name|Tuan/Puan}, {city|your area}); so a
# choice of two lowercase words is written with a capital ({Hi|hello}).
_CHOICE = re.compile(r"\{([^{}]*\|[^{}]*)\}")  # an innermost {a|b|...}
_KEPT = re.compile("\ue000(\\d+)\ue001")  # a placeholder set aside while the choices are made


def _is_placeholder(match: re.Match) -> bool:
    """{key} always; {key|fallback} when the key can be a placeholder's (else it is a choice)."""
    key = match[1]
    return match[2] is None or key in PLACEHOLDERS or key == attribute_key(key)


def _set_aside(template: str) -> tuple[str, list[str]]:
    """The template with its placeholders replaced by markers (so their bars are not choices), and them."""
    kept: list[str] = []

    def keep(match: re.Match) -> str:
        if not _is_placeholder(match):
            return match[0]
        kept.append(match[0])
        return f"\ue000{len(kept) - 1}\ue001"

    return PLACEHOLDER.sub(keep, template), kept


def spin(template: str, key: str) -> str:
    """The template with each {a|b|c} choice made for `key` (a phone number): always the same for it."""
    if "|" not in template:
        return template
    text, kept = _set_aside(template)
    seed = hashlib.blake2b(f"{key}\n{template}".encode(), digest_size=8).digest()
    rng = random.Random(seed)
    while match := _CHOICE.search(text):
        text = text[: match.start()] + rng.choice(match[1].split("|")) + text[match.end() :]
    return _KEPT.sub(lambda m: kept[int(m[1])], text)


def wordings(template: str) -> int:
    """How many different texts the template's choices can make (1 without any)."""
    text, _ = _set_aside(template)
    counts: list[int] = []  # of each choice made so far, marked in the text by its index

    def product(option: str) -> int:
        return math.prod(counts[int(i)] for i in re.findall("\ue002(\\d+)\ue003", option))

    while match := _CHOICE.search(text):
        counts.append(sum(product(option) for option in match[1].split("|")))
        text = f"{text[: match.start()]}\ue002{len(counts) - 1}\ue003{text[match.end() :]}"
    return product(text)


def uses_name(template: str) -> tuple[bool, bool]:
    """(uses {name} or {first_name}, every such placeholder has a fallback)."""
    named = [fallback for placeholder, fallback in PLACEHOLDER.findall(template) if placeholder in NAMED]
    return bool(named), all(named)


@dataclass(frozen=True)
class Missing:
    """Recipients without a value for one attribute the message uses."""

    key: str
    count: int
    examples: list[str]  # the first few, by name (else number)
    fallback: bool  # every use of the placeholder has a fallback

    @property
    def others(self) -> int:
        return self.count - len(self.examples)


@dataclass(frozen=True)
class MessagesPreview:
    texts: list[tuple[str, int]]  # each distinct text and how many recipients get it, most first
    without_name: int  # recipients with no name, where the message uses one
    fallback: bool  # those get the placeholders' fallbacks (else a blank)
    missing: list[Missing] = field(default_factory=list)  # per attribute the message uses
    wordings: int = 1  # the texts its choices ({Salam|Hi}) can make
    worded: int = 1  # of those, how many these recipients get


def messages_preview(template: str, recipients: list) -> MessagesPreview:
    """What each recipient will receive, as distinct texts with their counts, and who lacks a value."""
    spun = [spin(template, recipient.phone) for recipient in recipients]
    counts = Counter(
        message_render(text, recipient) for text, recipient in zip(spun, recipients, strict=True)
    )
    named, all_fallback = uses_name(template)
    without_name = sum(not recipient.name.strip() for recipient in recipients) if named else 0
    missing = []
    for key in attribute_placeholders(template):
        lacking = [r for r in recipients if not str(r.attributes.get(key, "")).strip()]
        if lacking:
            fallbacks = [
                fallback for placeholder, fallback in PLACEHOLDER.findall(template) if placeholder == key
            ]
            examples = [r.name.strip() or r.phone for r in lacking[:5]]
            missing.append(Missing(key, len(lacking), examples, all(fallbacks)))
    return MessagesPreview(
        counts.most_common(), without_name, all_fallback, missing, wordings(template), len(set(spun))
    )


@dataclass(frozen=True)
class Recipient:
    phone: str
    name: str = ""
    attributes: dict = field(default_factory=dict, compare=False)  # extra columns: {"city": "Ipoh"}


@dataclass
class ParsedRecipients:
    recipients: list[Recipient] = field(default_factory=list)
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)  # every problem, each naming its position
    row_errors: dict[str, str] = field(default_factory=dict)  # position -> what is wrong with that row
    rejected: list[tuple[str, str, str, str]] = field(default_factory=list)  # (position, phone, name, why)
    list_errors: list[str] = field(default_factory=list)  # of the list as a whole: empty, or too long

    def valid_only(self) -> "ParsedRecipients":
        """The valid recipients alone, for "create with the valid ones"; an error if there are none."""
        none = [] if self.recipients else ["No recipients: none of the lines is a phone number."]
        errors = self.list_errors or none
        return ParsedRecipients(self.recipients, self.duplicates, errors, list_errors=errors)


def parse_recipients(rows: Iterable[tuple]) -> ParsedRecipients:
    """Validate (position, phone, name[, attributes]) rows: E.164, duplicates dropped and counted.

    Errors name the position ("Line 3: ..."); an empty list and more recipients than
    BLAST_MAX_RECIPIENTS are errors too.
    """
    parsed = ParsedRecipients()
    seen: set[str] = set()
    limit = settings.BLAST_MAX_RECIPIENTS
    first_over_limit = None
    for position, raw_phone, raw_name, *more in rows:
        raw_phone, name = str(raw_phone).strip(), str(raw_name or "").strip()
        attributes = more[0] if more else {}
        try:
            phone = normalize_phone(raw_phone)
        except ValueError as exc:
            why = f": {EXCEL_CHANGED}" if SCIENTIFIC.match(raw_phone) else f" is {exc}"
            parsed.row_errors[position] = f"{_shorten(raw_phone)!r}{why}."
            parsed.errors.append(f"{position}: {parsed.row_errors[position]}")
            parsed.rejected.append((position, raw_phone, name, parsed.row_errors[position]))
            continue
        if len(name) > NAME_MAX_LENGTH or "\x00" in name:
            problem = (
                "has a NUL character" if "\x00" in name else f"is longer than {NAME_MAX_LENGTH} characters"
            )
            parsed.row_errors[position] = f"The name {problem}."
            parsed.errors.append(f"{position}: the name {problem}.")
            parsed.rejected.append((position, raw_phone, name[:NAME_MAX_LENGTH], parsed.row_errors[position]))
            continue
        if phone in seen:
            parsed.duplicates += 1
            continue
        seen.add(phone)
        if len(parsed.recipients) == limit and first_over_limit is None:
            first_over_limit = position
        parsed.recipients.append(Recipient(phone, name, attributes))
    if first_over_limit is not None:
        parsed.list_errors.append(
            f"Too many recipients: {len(parsed.recipients):,} after removing duplicates; the limit per "
            f"blast is {limit:,} ({first_over_limit} is the first over it)."
        )
    elif not parsed.recipients and not parsed.errors:
        parsed.list_errors.append("No recipients: give at least one phone number.")
    parsed.errors += parsed.list_errors
    return parsed


# Header words, English and Malay, as marketers' tools write them (lowercased, dots and extra spaces
# gone): the phone column and the name column, or the given and family name columns.
PHONE_HEADERS = {
    "phone", "phone number", "phone_number", "number", "mobile", "mobile phone", "mobile number", "whatsapp",
    "to", "tel", "telephone", "telefon", "no telefon", "nombor", "nombor telefon", "no tel", "h/p", "no h/p",
    "handphone", "no handphone", "phone 1 - value",
}  # fmt: skip
NAME_HEADERS = {"name", "nama", "full name", "nama penuh", "display name", "customer", "pelanggan"}
GIVEN_HEADERS = {"given name", "first name", "nama pertama"}
FAMILY_HEADERS = {"family name", "last name", "surname", "nama keluarga"}
SEPARATORS = re.compile(r"\s*(?::::|[;/|,]|\s{2,})\s*")  # numbers sharing a cell: "a ::: b" (Google), "a / b"
SCIENTIFIC = re.compile(r"^\d(?:\.\d+)?[eE]\+?\d+$")  # what Excel makes of a long number: 6.01235E+10
EXCEL_CHANGED = "Excel changed this number: format the column as Text and export again"


def _header(cell: str) -> str:
    return " ".join(cell.replace(".", " ").lower().split())


@dataclass(frozen=True)
class Columns:
    phone: int = 0
    name: int | None = 1
    family: int | None = None  # with `name` as the given name
    attributes: tuple[tuple[int, str], ...] = ()  # (column, key) of every other named column

    @classmethod
    def from_header(cls, cells: list[str]) -> "Columns | None":
        """The columns a header row names, or None when the row is not a header. Columns other than
        the phone's and the name's are attributes, keyed by their header ("Last Order": last_order)."""
        headers = [_header(cell) for cell in cells]
        phone = next((i for i, h in enumerate(headers) if h in PHONE_HEADERS), None)
        if phone is None:
            return None
        name = next((i for i, h in enumerate(headers) if h in NAME_HEADERS), None)
        given = next((i for i, h in enumerate(headers) if h in GIVEN_HEADERS), None)
        family = next((i for i, h in enumerate(headers) if h in FAMILY_HEADERS), None)
        if name is None and given is not None:
            name = given
        else:
            family = None
        used = {phone, name, family}
        attributes = tuple(
            (i, key) for i, cell in enumerate(cells) if i not in used and (key := attribute_key(cell))
        )
        return cls(phone, name, family, attributes)

    def read(self, cells: list[str]) -> tuple[str, str, dict[str, str]]:
        def cell(index):
            return cells[index] if index is not None and index < len(cells) else ""

        name = " ".join(part for part in (cell(self.name), cell(self.family)) if part)
        attributes = {key: value for index, key in self.attributes if (value := cell(index))}
        return _first_number(cell(self.phone)), name, attributes


def _first_number(cell: str) -> str:
    """The cell's number; of several, the first mobile (else the first that is a number at all)."""
    parts = [part for part in SEPARATORS.split(cell.strip()) if part]
    if len(parts) < 2:
        return cell.strip()
    numbers = []
    for part in parts:
        try:
            numbers.append(phonenumbers.parse(part, settings.PHONE_DEFAULT_REGION))
        except phonenumbers.NumberParseException:
            continue
    mobile = phonenumbers.PhoneNumberType.MOBILE
    for number in numbers:
        if phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) == mobile:
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return parts[0]


def _delimiter(text: str) -> str:
    """Comma, semicolon (Excel in many locales) or tab, whichever the first lines use."""
    sample = "\n".join(text.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def rows_from_cells(rows: Iterable[list[str]], label: str = "Line") -> list[tuple[str, str, str, dict]]:
    """("Line 3", phone, name, attributes) from rows of cells (CSV lines or spreadsheet rows, counted
    from 1).

    Blank rows are skipped. A first row naming a phone column (in English or Malay) is a header,
    and its name columns are used wherever they stand; its other columns are attributes.
    """
    result, columns, first = [], Columns(), True
    for number, cells in enumerate(rows, start=1):
        cells = [str(cell if cell is not None else "").strip() for cell in cells]
        if not any(cells):
            continue
        header, first = first and Columns.from_header(cells), False  # only the first row may be one
        if header:
            columns = header
            continue
        result.append((f"{label} {number}", *columns.read(cells)))
    return result


def rows_from_text(text: str, label: str = "Line") -> list[tuple[str, str, str, dict]]:
    """Rows from pasted or uploaded CSV text, whatever its delimiter (quotes kept: "Tan, Ah Kow")."""
    text = text.lstrip("\ufeff")
    return rows_from_cells(csv.reader(io.StringIO(text), delimiter=_delimiter(text)), label)


def file_text(data: bytes) -> tuple[str, str]:
    """An uploaded file as text: an .xlsx's first sheet, a BOM dropped, Excel's UTF-16 "Unicode Text",
    else Windows-1252 with a note (the note: how it was read, when people should check). Raises
    ValueError, worded for people, when it is not text we can read."""
    note = ""
    if data.startswith(b"PK\x03\x04"):  # a zip: an .xlsx workbook
        try:
            text = xlsx_as_csv(data)
        except ValueError:
            raise ValueError(
                "This Excel file could not be read: save it again from Excel, or as 'CSV UTF-8'."
            ) from None
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode Text": UTF-16, tab-separated
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:  # Excel's plain "CSV" on Windows
            text = data.decode("cp1252", errors="replace")
            note = "The file is not UTF-8: it was read as Windows-1252. Check that the names look right."
    if "\x00" in text:
        raise ValueError("This file is not text: save it as 'CSV UTF-8', or upload the .xlsx.")
    return text, note


def xlsx_as_csv(data: bytes) -> str:
    """An Excel workbook's first sheet as CSV text, numbers as the digits they are (never 6.01E+10).
    Raises ValueError when it is not a workbook we can read."""
    import zipfile

    import openpyxl

    try:
        sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True).worksheets[0]
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, IndexError) as exc:
        raise ValueError("not an Excel workbook") from exc

    def text(value):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return "" if value is None else str(value)

    out = io.StringIO()
    csv.writer(out).writerows([text(value) for value in row] for row in sheet.iter_rows(values_only=True))
    return out.getvalue()


def _shorten(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
