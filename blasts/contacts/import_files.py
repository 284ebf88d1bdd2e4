"""A contact file read as it streams, as tolerantly as the blast upload: CSV with any delimiter in
UTF-8 (with or without a BOM), UTF-16 (Excel's "Unicode Text") or Windows-1252 (Excel's plain CSV),
or an Excel workbook's first sheet; and an uploaded file kept between the import page's steps.
"""

import codecs
import contextlib
import csv
import datetime
import io
import re
import secrets
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.core import signing

from ..recipients import _delimiter

CHUNK = 1 << 20
UPLOAD_MAX_BYTES = 20 * 1024 * 1024
HEADER_WITHIN = 10  # the first non-blank rows in which a header naming a phone column is looked for
SAMPLES = 3  # rows shown under each column while choosing what it is
KEPT_SALT = "blasts.contact-import.file"
KEPT_MAX_AGE = 24 * 3600
KEPT_DIR = Path(tempfile.gettempdir()) / "blasts-contact-imports"

NOT_TEXT = "This file is not text: save it as 'CSV UTF-8', or upload the .xlsx."
OLD_EXCEL = (
    "This is an old Excel file (.xls): save it as Excel Workbook (.xlsx) or 'CSV UTF-8' and upload that."
)
BAD_EXCEL = "This Excel file could not be read: save it again from Excel, or as 'CSV UTF-8'."
WINDOWS = "The file is not UTF-8: it was read as Windows-1252. Check that the names look right."
GONE = (
    "The uploaded file is not here any more (imported already, or uploaded over a day ago): upload it again."
)


class ImportFileError(ValueError):
    """A file that cannot be read as contacts; the message says why and what to do, in a sentence."""


@dataclass
class Table:
    """A file's header and first rows, and its rows read again from the top whenever asked."""

    name: str
    header: list[str]
    header_row: int  # its row number, from 1
    samples: list[list[str]]  # the first rows under it
    total: int | None  # rows under the header: exact for CSV (blank ones skipped), about for Excel
    note: str  # how it was read, when people should know
    _read: Callable[[], Iterator[list[str]]]  # every row from the top, cells as text

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(row number, cells) of every non-blank row under the header, as the file streams."""
        for number, cells in enumerate(self._read(), start=1):
            if number > self.header_row and any(cells):
                yield number, cells


def table_read(file: BinaryIO, name: str, is_header: Callable[[list[str]], bool]) -> Table:
    """The table in a seekable binary file: its header is the first of the first rows `is_header`
    says is one (else the first non-blank row). ImportFileError says why a file cannot be read."""
    file.seek(0)
    head, note, total = file.read(8), "", None
    if head.startswith(b"PK\x03\x04"):  # a zip: an .xlsx workbook
        read, total = _workbook(file)
    elif head.startswith(b"\xd0\xcf\x11\xe0"):  # an OLE file: Excel 97-2003
        raise ImportFileError(OLD_EXCEL)
    else:
        encoding, note = _encoding(file)
        delimiter = _delimiter(_start(file, encoding))
        read = lambda: _csv_rows(file, encoding, delimiter)  # noqa: E731
    header_row, header, samples, count = _survey(read, is_header, count=total is None)
    if total is not None:
        total = max(total - header_row, len(samples))
    return Table(name, header, header_row, samples, count if total is None else total, note, read)


def _encoding(file: BinaryIO) -> tuple[str, str]:
    """The file's text encoding and, when it is not UTF-8, a note saying so; binary files refused."""
    file.seek(0)
    if file.read(2) in (b"\xff\xfe", b"\xfe\xff"):  # Excel's "Unicode Text": UTF-16, tab-separated
        file.seek(0)
        reader = codecs.getreader("utf-16")(file, errors="replace")
        while chunk := reader.read(CHUNK):
            if "\x00" in chunk:
                raise ImportFileError(NOT_TEXT)
        return "utf-16", ""
    file.seek(0)
    decoder, utf8 = codecs.getincrementaldecoder("utf-8")(), True
    while chunk := file.read(CHUNK):
        if b"\x00" in chunk:
            raise ImportFileError(NOT_TEXT)
        if utf8:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                utf8 = False
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        utf8 = False
    return ("utf-8-sig", "") if utf8 else ("cp1252", WINDOWS)


def _text(file: BinaryIO, encoding: str) -> io.TextIOWrapper:
    file.seek(0)
    return io.TextIOWrapper(file, encoding=encoding, errors="replace", newline="")


def _start(file: BinaryIO, encoding: str) -> str:
    text = _text(file, encoding)
    try:
        return text.read(64 * 1024)
    finally:
        text.detach()  # the file stays open for the next read


def _csv_rows(file: BinaryIO, encoding: str, delimiter: str) -> Iterator[list[str]]:
    text = _text(file, encoding)
    try:
        for cells in csv.reader(text, delimiter=delimiter):
            yield [cell.strip() for cell in cells]
    finally:
        text.detach()


def _cell(value) -> str:
    """A spreadsheet cell as text: numbers as the digits they are (never 6.01E+10), dates as dates."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime) and value.time() == datetime.time():
        return value.date().isoformat()
    return str(value).strip()


def _workbook(file: BinaryIO) -> tuple[Callable[[], Iterator[list[str]]], int]:
    """The first sheet's rows, read again from the top each time (openpyxl's read-only mode streams
    them), and its row count as the workbook says it."""
    import openpyxl

    file.seek(0)
    try:
        sheet = openpyxl.load_workbook(file, read_only=True, data_only=True).worksheets[0]
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, IndexError, TypeError):
        raise ImportFileError(BAD_EXCEL) from None

    def read():
        for row in sheet.iter_rows(values_only=True):
            yield [_cell(value) for value in row]

    return read, sheet.max_row or 0


def _survey(read, is_header, *, count: bool) -> tuple[int, list[str], list[list[str]], int]:
    """(header row, header, sample rows, rows under the header). Every row is read when `count`, so
    a broken row (a quote left open) is found before anything is written."""
    header, before, samples, rows, number = None, [], [], 0, 0

    def under(cells):
        nonlocal rows
        rows += 1
        if len(samples) < SAMPLES:
            samples.append(cells)

    try:
        for number, cells in enumerate(read(), start=1):
            if not any(cells):
                continue
            if header is not None:
                under(cells)
                if len(samples) == SAMPLES and not count:
                    break
            elif is_header(cells):
                header = (number, cells)
            elif len(before) < HEADER_WITHIN:
                before.append((number, cells))
            else:  # none of the first rows names a phone column: the first is the header
                header, before = before[0], [*before[1:], (number, cells)]
                for _, row in before:
                    under(row)
    except csv.Error as exc:
        raise ImportFileError(
            f"Row {number + 1} could not be read ({exc}): a quote may be left open. Fix it, or save the "
            "file again from Excel."
        ) from None
    if header is None and before:  # a short file with no phone column named
        header = before[0]
        for _, row in before[1:]:
            under(row)
    if header is None:
        raise ImportFileError("The file is empty: it needs a header row and a row for each contact.")
    if not samples:
        raise ImportFileError(f"There are no rows under the header (row {header[0]}): one row per contact.")
    return header[0], header[1], samples, rows


# --- an upload kept between the page's steps -----------------------------------------------------


def kept_keep(file: BinaryIO, name: str) -> str:
    """Save an uploaded file for the next step; the signed token returned names it (and cannot be
    changed to name another). Files older than KEPT_MAX_AGE go."""
    KEPT_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    for old in KEPT_DIR.iterdir():
        if old.stat().st_mtime < time.time() - KEPT_MAX_AGE:
            old.unlink(missing_ok=True)
    key = secrets.token_hex(16)
    file.seek(0)
    with (KEPT_DIR / key).open("xb") as out:
        shutil.copyfileobj(file, out, CHUNK)
    return signing.dumps({"key": key, "name": name}, salt=KEPT_SALT)


def kept_open(token: str) -> tuple[Path, str]:
    """The kept file's path and its name as uploaded; ImportFileError when the token is not one we
    signed, is over a day old, or its file went."""
    try:
        kept = signing.loads(token, salt=KEPT_SALT, max_age=KEPT_MAX_AGE)
    except signing.BadSignature:
        raise ImportFileError(GONE) from None
    key = str(kept.get("key", "")) if isinstance(kept, dict) else ""
    path = KEPT_DIR / key
    if not re.fullmatch("[0-9a-f]{32}", key) or not path.is_file():
        raise ImportFileError(GONE)
    return path, str(kept.get("name", ""))


def kept_discard(token: str) -> None:
    with contextlib.suppress(ImportFileError):
        kept_open(token)[0].unlink(missing_ok=True)
