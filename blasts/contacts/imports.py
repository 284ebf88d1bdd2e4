"""Contact import: a CSV or Excel file with a header, each column mapped to a contact's phone, name, tags or
an attribute, every row merged into the contacts by contacts_upsert (the one merge rule).

Memory stays flat whatever the file's length: the file is read as it streams (CSV through a text
wrapper, Excel through openpyxl's read-only rows), rows go to the database a batch at a time, and
only the numbers already met (to count duplicates) and the first ERRORS_KEPT errors are kept.
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from ..audit import Actor, Did, audit_record
from ..models import PLACEHOLDERS
from ..recipients import (
    EXCEL_CHANGED,
    FAMILY_HEADERS,
    GIVEN_HEADERS,
    NAME_HEADERS,
    PHONE_HEADERS,
    SCIENTIFIC,
    _first_number,
    attribute_key,
    normalize_phone,
)
from ..text import clean_text
from .book import ContactIn, contacts_upsert, tag_names
from .import_files import (
    UPLOAD_MAX_BYTES,
    ImportFileError,
    Table,
    kept_discard,
    kept_keep,
    kept_open,
    table_read,
)

__all__ = ["UPLOAD_MAX_BYTES", "ImportFileError", "Table", "kept_keep"]  # for the interfaces

BATCH = 1000  # distinct numbers written at a time
ERRORS_KEPT = 1000  # invalid rows listed; the rest are counted

PHONE, NAME, GIVEN, FAMILY, TAGS, IGNORE = "phone", "name", "given", "family", "tags", "ignore"
ATTRIBUTE = "attribute:"  # + the attribute's key: "attribute:city"
LABELS = {
    PHONE: "Phone",
    NAME: "Name",
    GIVEN: "Given name",
    FAMILY: "Family name",
    TAGS: "Tags",
    IGNORE: "Leave out",
}

# Beyond the blast upload's header words (recipients.py): Outlook's and Google Contacts' exports.
# Outlook lists its business and home phones before "Mobile Phone"; a mobile column is preferred,
# then any other phone column.
MORE_GIVEN = {"middle name", "additional name"}  # joined after the given name, in column order
OTHER_PHONES = re.compile(r"\bphone\b|telefon|\btel\b|mobile|handphone|whatsapp|\bhp\b|\bh/p\b")
TAG_HEADERS = {
    "tags",
    "tag",
    "labels",
    "label",
    "group membership",
    "groups",
    "group",
    "categories",
    "kumpulan",
}
ALIASES = {  # header: attribute key
    "e-mail address": "email",
    "e-mail 1 - value": "email",
    "email address": "email",
    "e-mail": "email",
    "emel": "email",
    "alamat emel": "email",
    "organization name": "company",
    "organization 1 - name": "company",
    "syarikat": "company",
}
# Export columns that describe other columns or the address book itself, not the person.
NOISE = re.compile(
    r" - (type|label)$|yomi|^phonetic |^photo$|^file as$|^priority$|^sensitivity$|^private$|^initials$|"
    r"^billing information$|^directory server$|^mileage$|^e-mail( \d)? (type|display name)$"
)
TAG_SEPARATORS = re.compile(r"\s*(?::::|[,;|])\s*")  # "VIP; Raya", Google's "* myContacts ::: Friends"
GOOGLE_EVERYONE = "* mycontacts"  # Google's label on every contact: says nothing


def _header(cell: str) -> str:
    return " ".join(cell.replace(".", " ").lower().split())


def attribute_keys(header: list[str]) -> list[str]:
    """Each column's attribute key, should it be one: from its header ("Last Order": last_order), each
    once, never a placeholder's own name ({name}, {phone}); "" for a column with no usable header."""
    keys, used = [], set(PLACEHOLDERS)
    for cell in header:
        key = ALIASES.get(_header(cell)) or attribute_key(clean_text(cell))
        if key:
            base, n = key, 1
            while key in used:  # "city", "city_2", … within attribute_key's 50 characters
                n += 1
                key = f"{base[: 49 - len(str(n))]}_{n}"
            used.add(key)
        keys.append(key)
    return keys


def field_choices(key: str) -> list[tuple[str, str]]:
    """What one column may be (its attribute under `key`, if it has one), for the page's select."""
    attribute = [(ATTRIBUTE + key, f"Attribute {{{key}}}")] if key else []
    return (
        [(name, label) for name, label in LABELS.items() if name != IGNORE]
        + attribute
        + [(IGNORE, LABELS[IGNORE])]
    )


@dataclass
class Entry:
    """One row as given: its position (row number in the file, or index in a list), its number as
    written, and what else it says."""

    row: int | str
    phone: str
    name: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


class Mapping:
    """What each column of a header is: PHONE, NAME, GIVEN, FAMILY, TAGS, IGNORE or ATTRIBUTE + key."""

    def __init__(self, fields: Iterable[str]):
        self.fields = list(fields)
        where = lambda kind: [i for i, f in enumerate(self.fields) if f == kind]  # noqa: E731
        phones, names = where(PHONE), where(NAME)
        self._phone = phones[0] if phones else None
        self._name = names[0] if names else None
        self._given, self._family, self._tags = where(GIVEN), where(FAMILY), where(TAGS)
        self._attributes = [
            (i, f.removeprefix(ATTRIBUTE)) for i, f in enumerate(self.fields) if f.startswith(ATTRIBUTE)
        ]

    def __eq__(self, other):
        return isinstance(other, Mapping) and self.fields == other.fields

    def __repr__(self):
        return f"Mapping({self.fields!r})"

    @classmethod
    def guess(cls, header: list[str]) -> "Mapping":
        """The likely meaning of each column, from its header: English and Malay words, and the
        columns of Google Contacts' and Outlook's exports; any other column is an attribute."""
        words = [_header(cell) for cell in header]
        phone = next((i for i, w in enumerate(words) if w in PHONE_HEADERS), None)
        if phone is None:
            phone = next((i for i, w in enumerate(words) if OTHER_PHONES.search(w)), None)
        name = next((i for i, w in enumerate(words) if w in NAME_HEADERS), None)
        fields = []
        for i, (word, key) in enumerate(zip(words, attribute_keys(header), strict=True)):
            if i == phone:
                fields.append(PHONE)
            elif i == name:
                fields.append(NAME)
            elif word in GIVEN_HEADERS | MORE_GIVEN | FAMILY_HEADERS:
                # Beside a full name (Google's older export has both) the parts say nothing more.
                fields.append(IGNORE if name is not None else FAMILY if word in FAMILY_HEADERS else GIVEN)
            elif word in TAG_HEADERS:
                fields.append(TAGS)
            elif not key or NOISE.search(word):
                fields.append(IGNORE)
            else:
                fields.append(ATTRIBUTE + key)
        return cls(fields)

    @classmethod
    def chosen(cls, header: list[str], choices: dict[str, str]) -> "Mapping":
        """The guess, with the columns `choices` names (by header) set to a field ("phone", "tags",
        "attribute:city", "ignore", …). ValueError says what is wrong with a choice."""
        fields, words = cls.guess(header).fields, [_header(cell) for cell in header]
        problems = []
        for column, chosen in choices.items():
            chosen = clean_text(str(chosen)).strip()
            key = attribute_key(chosen.removeprefix(ATTRIBUTE)) if chosen.startswith(ATTRIBUTE) else ""
            if _header(column) not in words:
                problems.append(f"There is no column {column!r}: the columns are {', '.join(header)}.")
            elif key or chosen in LABELS:
                fields[words.index(_header(column))] = ATTRIBUTE + key if key else chosen
            else:
                problems.append(
                    f"{column}={chosen!r}: a column is one of {', '.join(LABELS)}, or attribute:<name>."
                )
        if problems:
            raise ValueError(" ".join(problems))
        return cls(fields)

    def problems(self) -> list[str]:
        """Why rows could not be read with this mapping (nothing: they can)."""
        found = []
        if self._phone is None:
            found.append("Choose the column that holds the phone numbers.")
        if self.fields.count(PHONE) > 1:
            found.append("Choose one phone column only: the others can be attributes.")
        if self.fields.count(NAME) > 1:
            found.append("Choose one name column only (or given and family name columns).")
        keys = [key for _, key in self._attributes]
        if twice := sorted({key for key in keys if keys.count(key) > 1}):
            found.append(f"Two columns are the same attribute: {', '.join(twice)}.")
        if reserved := sorted(set(keys) & set(PLACEHOLDERS)):
            found.append(f"{', '.join(reserved)} is the contact's own: choose another attribute name.")
        return found

    def read(self, row: int | str, cells: list[str]) -> Entry:
        """One row of cells as an Entry."""
        size = len(cells)
        cell = lambda i: cells[i] if i is not None and i < size else ""  # noqa: E731
        name = cell(self._name) or " ".join(part for i in (*self._given, *self._family) if (part := cell(i)))
        attributes = {key: value for i, key in self._attributes if (value := cell(i))}
        tags = [tag for i in self._tags for tag in tags_split(cell(i))]
        return Entry(row, cell(self._phone), name, attributes, tags)


def tags_split(cell: str) -> list[str]:
    """The tags one cell holds, separated by , ; | or Google's :::, without Google's own "* myContacts"
    (every contact has it) and without the star it puts before its other system groups."""
    parts = (part.strip() for part in TAG_SEPARATORS.split(cell.strip()))
    return [part.removeprefix("* ") for part in parts if part and part.lower() != GOOGLE_EVERYONE]


@dataclass(frozen=True)
class RowError:
    row: int | str  # the row number in the file (the header's is 1 when it is the first), or list index
    phone: str  # as given
    why: str

    def __str__(self) -> str:
        where = f"Row {self.row}" if isinstance(self.row, int) else str(self.row)
        return f"{where}: {self.why}"


@dataclass
class ImportSummary:
    """What an import did. Every row read is one of: a contact created, updated or unchanged (the first
    row with its number), a duplicate (a later row with a number met before: merged into it), invalid."""

    rows: int = 0  # rows read, blank ones skipped
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    invalid: int = 0
    errors: list[RowError] = field(default_factory=list)  # the first ERRORS_KEPT invalid rows

    @property
    def contacts(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def errors_left_out(self) -> int:
        return self.invalid - len(self.errors)

    def counts(self) -> dict[str, int]:
        return {
            name: getattr(self, name)
            for name in ("rows", "created", "updated", "unchanged", "duplicates", "invalid")
        }

    def as_dict(self) -> dict:
        return self.counts() | {"errors": [asdict(error) for error in self.errors]}

    def line(self) -> str:
        """The summary in one line."""
        return (
            f"{self.rows:,} rows: {self.created:,} created, {self.updated:,} updated, {self.unchanged:,} "
            f"unchanged, {self.duplicates:,} duplicates merged, {self.invalid:,} invalid"
        )

    def _invalid(self, entry: Entry, why: str) -> None:
        self.invalid += 1
        if len(self.errors) < ERRORS_KEPT:
            shown = clean_text(entry.phone)
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            self.errors.append(RowError(entry.row, shown, why))


def _why(raw: str, exc: ValueError) -> str:
    if not raw:
        return "No phone number."
    shown = clean_text(raw) if len(raw) <= 40 else clean_text(raw[:39]) + "…"
    return f"{shown!r}: {EXCEL_CHANGED}." if SCIENTIFIC.match(raw) else f"{shown!r} is {exc}."


def contacts_import(
    *,
    rows: Iterable,
    mapping: Mapping | None = None,
    tags: Iterable[str] = (),
    by: Actor,
    progress: Callable[[int], None] | None = None,
    source: str = "",
    batch: int = BATCH,
) -> ImportSummary:
    """Create or update a contact for every row with a phone number: rows are (row number, cells) read
    with `mapping`, or, without one, Entries (the API's list). `tags` go on every contact imported.
    `progress(rows read)` is called after each batch; one audit row says what was done, from `source`."""
    if mapping is not None and (problems := mapping.problems()):
        raise ValueError(" ".join(problems))
    entries: Iterable[Entry] = rows if mapping is None else (mapping.read(n, cells) for n, cells in rows)
    summary, extra = ImportSummary(), tag_names(tags)
    seen: set[int] = set()  # every number met, as digits: for 100,000 rows, a few MB
    fresh, fresh_phones, again = [], set(), []

    def flush():
        done = contacts_upsert(fresh, batch=batch + 1)
        summary.created += done.created
        summary.updated += done.updated
        summary.unchanged += done.unchanged
        contacts_upsert(again, batch=batch + 1)  # into contacts met in an earlier batch: counted there
        fresh.clear(), fresh_phones.clear(), again.clear()
        if progress:
            progress(summary.rows)

    for entry in entries:
        summary.rows += 1
        raw = entry.phone.strip()
        try:
            phone = normalize_phone(_first_number(raw) if raw else raw)
        except ValueError as exc:
            summary._invalid(entry, _why(raw, exc))
            continue
        person = ContactIn(phone, entry.name, entry.attributes, [*entry.tags, *extra])
        digits = int(phone[1:])
        if digits not in seen:
            seen.add(digits)
            fresh_phones.add(digits)
            fresh.append(person)
        else:
            summary.duplicates += 1
            (fresh if digits in fresh_phones else again).append(person)
        if len(fresh_phones) >= batch or len(fresh) + len(again) >= 2 * batch:
            flush()
    flush()
    audit_record(by, Did.CONTACTS_IMPORTED, about=source or "contacts", tags=extra, **summary.counts())
    return summary


def table_open(file, name: str = "") -> Table:
    """The table in a file opened in binary (seekable): its header is the first row naming a phone
    column (else the first row). ImportFileError says why a file cannot be read."""
    return table_read(file, name, is_header=lambda cells: Mapping.guess(cells)._phone is not None)


def contacts_import_file(
    *,
    table: "Table",
    mapping: Mapping,
    tags: Iterable[str] = (),
    by: Actor,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """contacts_import of every row under a file's header."""
    return contacts_import(
        rows=table.rows(), mapping=mapping, tags=tags, by=by, progress=progress, source=table.name
    )


def kept_import(*, token: str, mapping: Mapping, tags: Iterable[str] = (), by: Actor) -> ImportSummary:
    """Import a file kept by kept_keep, then forget it (a second submit finds nothing to import twice)."""
    path, name = kept_open(token)
    with path.open("rb") as file:
        summary = contacts_import_file(table=table_open(file, name), mapping=mapping, tags=tags, by=by)
    kept_discard(token)
    return summary
