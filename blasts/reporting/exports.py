"""Recipients as CSV, streamed a chunk at a time (never all in memory)."""

import csv

from django.http import StreamingHttpResponse

from ..models import BlastRecipient

Status = BlastRecipient.Status
CSV_FIELDS = [
    "phone", "name", "status", "message_id", "sent_at", "delivered_at", "read_at", "replied_at", "closed_at",
    "failure_reason", "reply_text",
]  # fmt: skip
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
        return Status(value).name
    if field == "phone":
        return value  # E.164 we wrote ourselves: its + starts a number, not a formula
    return csv_safe(value)  # names, replies, failure reasons and message ids come from outside


def recipients_csv_response(recipients, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_FIELDS)
        for row in recipients.values(*CSV_FIELDS).iterator(chunk_size=2000):
            yield writer.writerow([_cell(field, row[field]) for field in CSV_FIELDS])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
