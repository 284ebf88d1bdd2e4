"""The opt-out list's writes and reads. The only code that writes OptOut rows: a number is added (by
a STOP reply, a person or an import) or removed with a reason, and each change leaves an audit row.
Every send path reads the list: blast_create makes a listed number SKIPPED, the sender skips one
listed after its blast was made, and segments leave listed contacts out."""

import csv
import re
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.formats import date_format

from ..audit import Actor, Did, audit_record
from ..models import Blast, Contact, OptOut
from ..recipients import EXCEL_CHANGED, SCIENTIFIC, normalize_phone, rows_from_text
from ..reporting.exports import csv_safe
from ..text import clean_text, fit

Source = OptOut.Source
BATCH = 1000
# A column of an imported file with its own reason per number (header words, as attribute keys).
REASON_COLUMNS = ("reason", "sebab", "why", "note", "notes", "catatan")
CSV_FIELDS = ["phone", "added_at", "source", "reason", "reply_text", "blast_id", "blast"]
_PHONE_LIKE = re.compile(r"[\d\s()+./-]+")


def opt_out_add(
    *,
    phone: str,
    reason: str,
    by: Actor,
    source: Source = Source.PERSON,
    blast: Blast | None = None,
    reply_text: str = "",
) -> OptOut:
    """Put a number (E.164) on the opt-out list, saying where it came from: every later blast skips
    it. A number listed already keeps its entry (a second STOP changes nothing)."""
    reason = fit(OptOut, "reason", clean_text(reason).strip())
    with transaction.atomic():
        opt_out, created = OptOut.objects.get_or_create(
            phone=phone,
            defaults={
                "reason": reason,
                "source": source,
                "blast": blast,
                "reply_text": clean_text(reply_text),
                "added_by": by.user if by.user is not None and by.user.is_authenticated else None,
            },
        )
        if created:
            detail = {"replied_to_blast": blast.pk} if blast is not None else {}  # not the blast's own trail
            audit_record(by, Did.OPT_OUT_ADDED, about=phone, reason=reason, source=source, **detail)
    return opt_out


def opt_out_remove(*, opt_out: OptOut, by: Actor, reason: str) -> bool:
    """Take a number off the opt-out list, saying why: later blasts may message it again. False when
    it was gone already (someone else removed it meanwhile): nothing is audited twice."""
    with transaction.atomic():
        removed, _ = OptOut.objects.filter(pk=opt_out.pk).delete()
        if removed:
            audit_record(by, Did.OPT_OUT_REMOVED, about=opt_out.phone, reason=clean_text(reason).strip(),
                         source=opt_out.source, listed_since=opt_out.created_at.isoformat())  # fmt: skip
    return bool(removed)


def opt_out_since(phone: str) -> OptOut | None:
    """The number's entry on the list (phone in E.164), or None."""
    return OptOut.objects.filter(phone=phone).first()


def opt_out_since_words(opt_out: OptOut) -> str:
    """'+60123456789 has opted out already, since 3 May 2025, 14:02.' for a form's error."""
    when = date_format(timezone.localtime(opt_out.created_at), "j M Y, H:i")
    return f"{opt_out.phone} has opted out already, since {when}."


# --- reads ------------------------------------------------------------------------------------------


def opt_outs_matching(opt_outs: QuerySet, q: str) -> QuerySet:
    """Entries whose number matches `q` typed in any format ("012-345 6789", "+60 12", "6789"), or
    whose reason or reply text contains it."""
    q = clean_text(q).strip()
    if not q:
        return opt_outs
    match = Q(reason__icontains=q) | Q(reply_text__icontains=q)
    with suppress(ValueError):
        match |= Q(phone=normalize_phone(q))
    digits = re.sub(r"\D", "", q).lstrip("0")  # a local 0 is the country code's place
    if len(digits) >= 3 and _PHONE_LIKE.fullmatch(q):
        match |= Q(phone__contains=digits)
    return opt_outs.filter(match)


def opt_outs_listed(opt_outs: QuerySet) -> QuerySet:
    """The entries with what a list shows beside them: the blast, who added it, and the contact with
    that number (`contact_pk`, `contact_name`; None when there is none), in one query."""
    contact = Contact.objects.filter(phone=OuterRef("phone"))
    return opt_outs.select_related("blast", "added_by").annotate(
        contact_pk=Subquery(contact.values("pk")[:1]), contact_name=Subquery(contact.values("name")[:1])
    )


# --- import -----------------------------------------------------------------------------------------


@dataclass
class Imported:
    added: int = 0
    already: int = 0  # on the list before
    repeated: int = 0  # the same number again in the file
    invalid: list[tuple[str, str, str]] = field(default_factory=list)  # (line, as written, why)


def opt_out_rows(text: str) -> list[tuple[str, str, str]]:
    """(line, phone as written, its own reason or "") from a file's text, read as tolerantly as a
    blast's upload (delimiter, quotes, English and Malay header words). Only a header names a reason
    column ("reason", "sebab", …); without one, the first column is the number and the rest is ignored."""
    rows = []
    for position, phone, _name, attributes in rows_from_text(text, label="Line"):
        own = next((attributes[key] for key in REASON_COLUMNS if attributes.get(key)), "")
        rows.append((position, phone, own))
    return rows


def opt_outs_import(*, rows: Iterable[tuple[str, str, str]], reason: str, by: Actor) -> Imported:
    """Add every valid number of (line, phone, own reason) rows as an import (its own reason, else
    `reason`); count those listed already and repeated, and say why each invalid line was left out.
    One audit row for the whole import."""
    imported, wanted = Imported(), {}
    for position, raw, own in rows:
        raw = str(raw).strip()
        try:
            phone = normalize_phone(raw)
        except ValueError as exc:
            why = EXCEL_CHANGED if SCIENTIFIC.match(raw) else f"{exc}".capitalize()
            imported.invalid.append((position, clean_text(raw[:40]), f"{why}."))
            continue
        if phone in wanted:
            imported.repeated += 1
            continue
        wanted[phone] = fit(OptOut, "reason", clean_text(own.strip() or reason).strip())
    user = by.user if by.user is not None and by.user.is_authenticated else None
    phones = list(wanted)
    with transaction.atomic():
        for start in range(0, len(phones), BATCH):
            chunk = phones[start : start + BATCH]
            listed = set(OptOut.objects.filter(phone__in=chunk).values_list("phone", flat=True))
            new = [
                OptOut(phone=phone, reason=wanted[phone], source=Source.IMPORT, added_by=user)
                for phone in chunk
                if phone not in listed
            ]
            OptOut.objects.bulk_create(new, ignore_conflicts=True)  # one added meanwhile stays as it was
            imported.added += len(new)
            imported.already += len(listed)
        audit_record(
            by, Did.OPT_OUTS_IMPORTED, about=f"{imported.added} numbers added to the opt-out list",
            reason=clean_text(reason).strip(), added=imported.added, already=imported.already,
            repeated=imported.repeated, invalid=len(imported.invalid),
        )  # fmt: skip
    return imported


# --- export -----------------------------------------------------------------------------------------


def opt_outs_exported(*, filters: dict, rows: int, by: Actor) -> None:
    """Someone downloaded the opt-out list's phone numbers: with which filter, how many rows."""
    audit_record(by, Did.EXPORTED, about="the opt-out list", filters=filters, rows=rows)


class _Echo:
    def write(self, value):
        return value


def _csv_lines(opt_outs: QuerySet) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_FIELDS)
    read = opt_outs.order_by("-created_at", "-id").values_list(
        "phone",
        "created_at",
        "source",
        "reason",
        "reply_text",
        "blast_id",
        "blast__tag",
        "blast__follow_up_stage",
    )
    for phone, at, source, reason, reply_text, blast_id, tag, stage in read.iterator(chunk_size=2000):
        added_at = timezone.localtime(at).isoformat(sep=" ", timespec="seconds")
        blast = f"{tag} · {stage}" if blast_id else ""
        # The phone is E.164 we wrote ourselves; reasons, replies and tags come from outside.
        yield writer.writerow([phone, added_at, source, *map(csv_safe, (reason, reply_text)), blast_id or "",
                               csv_safe(blast)])  # fmt: skip


def opt_outs_csv_response(opt_outs: QuerySet, filename: str = "opt-outs.csv") -> StreamingHttpResponse:
    """The entries as a CSV file (CSV_FIELDS; times in the site's zone), streamed a chunk at a time."""
    response = StreamingHttpResponse(_csv_lines(opt_outs), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
