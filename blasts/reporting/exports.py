"""Recipients as CSV, streamed a chunk at a time (never all in memory)."""

import csv
from datetime import datetime

from django.http import StreamingHttpResponse
from django.utils import timezone

from ..models import BlastRecipient

Status = BlastRecipient.Status
# The columns: status as the pages say it, then its code; times in the site's zone with the offset.
# variant: the letter of the message it got (blank without variants); clicked_at: its first click on a
# tracked link (blank: none).
CSV_FIELDS = [
    "phone", "name", "status", "status_code", "message_id", "sent_at", "delivered_at", "read_at", "replied_at",
    "closed_at", "failure_reason", "reply_text", "variant", "clicked_at",
]  # fmt: skip
_READ = [field for field in CSV_FIELDS if field != "status_code"]
# OWASP's list: a spreadsheet runs a cell that starts with = + - @ as a formula, and skips a leading
# tab, CR or LF before looking (so "\t=HYPERLINK(...)" runs too).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


class _Echo:
    def write(self, value):
        return value


def csv_safe(value):
    """A text cell a spreadsheet shows and never runs: prefixed with ' when it could start a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _cell(field: str, value):
    if field == "status":
        return Status(value).label
    if field == "status_code":
        return Status(value).name
    if isinstance(value, datetime):
        return timezone.localtime(value).isoformat(sep=" ", timespec="seconds")  # as the pages, to the second
    if field == "phone":
        return value  # E.164 we wrote ourselves: its + starts a number, not a formula
    return csv_safe(value)  # names, replies, failure reasons and message ids come from outside


def recipients_csv_response(recipients, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_FIELDS)
        for row in recipients.values(*_READ).iterator(chunk_size=2000):
            row["status_code"] = row["status"]
            yield writer.writerow([_cell(field, row[field]) for field in CSV_FIELDS])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
