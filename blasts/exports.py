"""Recipients as CSV, streamed a chunk at a time (never all in memory)."""

import csv

from django.http import StreamingHttpResponse

from .models import BlastRecipient

Status = BlastRecipient.Status
CSV_FIELDS = [
    "phone", "name", "status", "message_id", "sent_at", "delivered_at", "read_at", "replied_at", "closed_at",
    "failure_reason", "reply_text",
]  # fmt: skip
FREE_TEXT = {"name", "failure_reason", "reply_text"}


class _Echo:
    def write(self, value):
        return value


def _cell(field: str, value):
    if field == "status":
        return Status(value).name
    if field in FREE_TEXT and isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value  # a name or reply is never run as a spreadsheet formula
    return value


def recipients_csv_response(recipients, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_FIELDS)
        for row in recipients.values(*CSV_FIELDS).iterator(chunk_size=2000):
            yield writer.writerow([_cell(field, row[field]) for field in CSV_FIELDS])

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
