"""Named reads about contacts: the list (searched, and filtered by the segments' own rules), one page of
it by its order, and one contact's opt-out and timeline across every blast."""

import re
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from ..models import BlastRecipient, Contact, ContactTag, OptOut, Segment
from ..recipients import normalize_phone
from ..segments.rules import segment_members
from ..statuses import STAGE_FLOOR

PAGE_SIZE = 50
TAG_CHOICES_MAX = 500
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What people type for a number: digits with spaces, dashes, dots, brackets and a plus. ASCII digits
# only: \d would take any script's digits, which no stored number has.
PHONE_LIKE = re.compile(r"[0-9 +().\-]*[0-9][0-9 +().\-]*")
CURSOR = re.compile(r"(-?[0-9]{1,18})_([0-9]{1,18})")


def contacts_search(contacts: QuerySet, text: str) -> QuerySet:
    """The contacts whose name contains `text`; a number in any format ("012-345 6789", "+60 12…")
    finds the contacts whose number has those digits, or is that number."""
    text = text.strip()
    if not text:
        return contacts
    match = Q(name__icontains=text)
    if PHONE_LIKE.fullmatch(text):
        match |= Q(phone__contains=re.sub("[^0-9]", "", text))
        with suppress(ValueError):
            match |= Q(phone=normalize_phone(text))
    return contacts.filter(match)


def contacts_listed(*, rules: list[dict], q: str = "") -> QuerySet:
    """Every contact (opted-out ones too) meeting all the rules (segments/rules.py: the segments' own
    definition) and the search, newest seen first."""
    members = segment_members(Segment.Match.ALL, rules, with_opted_out=True)
    return contacts_search(members, q).order_by("-last_seen_at", "-id")


def contacts_with_facts(contacts: QuerySet) -> QuerySet:
    """The contacts with what the list shows of each: opted out or not, messages sent (every blast),
    their tags (one query for a whole page)."""
    sent = (
        BlastRecipient.objects.filter(contact=OuterRef("pk"), status__gte=STAGE_FLOOR["sent"])
        .order_by()
        .values("contact")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return contacts.annotate(
        opted_out=Exists(OptOut.objects.filter(phone=OuterRef("phone"))),
        messages_sent=Coalesce(Subquery(sent), Value(0), output_field=IntegerField()),
    ).prefetch_related("tags")


@dataclass
class ContactPage:
    contacts: list[Contact]
    newer: str  # the cursor of the page before (?before=), "" on the first page
    older: str  # the cursor of the page after (?after=), "" on the last page


def _cursor(contact: Contact) -> str:
    return f"{(contact.last_seen_at - EPOCH) // timedelta(microseconds=1)}_{contact.pk}"


def _position(cursor: str) -> tuple[datetime, int] | None:
    found = CURSOR.fullmatch(cursor or "")
    if not found:
        return None
    try:
        return EPOCH + timedelta(microseconds=int(found[1])), int(found[2])
    except OverflowError:
        return None


def contacts_page(
    contacts: QuerySet, *, after: str = "", before: str = "", size: int = PAGE_SIZE
) -> ContactPage:
    """One page of the contacts in list order (last seen, newest first), after or before a cursor from
    another page: no count and no offset, so a page of a million contacts costs what the first does
    (the contact_last_seen index). A cursor that is not one gives the first page."""
    rows = contacts_with_facts(contacts)
    if position := _position(before):
        seen, pk = position
        newer = rows.filter(last_seen_at__gte=seen).filter(Q(last_seen_at__gt=seen) | Q(pk__gt=pk))
        found = list(newer.order_by("last_seen_at", "id")[: size + 1])
        if len(found) > size:
            page = found[:size][::-1]
            return ContactPage(page, _cursor(page[0]), _cursor(page[-1]))
        after = ""  # less than a page before it: that is the first page
    if position := _position(after):
        seen, pk = position
        rows = rows.filter(last_seen_at__lte=seen).filter(Q(last_seen_at__lt=seen) | Q(pk__lt=pk))
    found = list(rows.order_by("-last_seen_at", "-id")[: size + 1])
    page = found[:size]
    newer = _cursor(page[0]) if position and page else ""
    return ContactPage(page, newer, _cursor(page[-1]) if len(found) > size else "")


def contact_tag_names() -> list[str]:
    """The tags there are, by name (for the filters to offer)."""
    return list(ContactTag.objects.values_list("name", flat=True)[:TAG_CHOICES_MAX])


def contact_opt_out(contact: Contact) -> OptOut | None:
    """The contact's entry on the opt-out list, with where it came from; None when it has none."""
    return OptOut.objects.filter(phone=contact.phone).select_related("blast", "added_by").first()


def contact_timeline(contact: Contact) -> QuerySet:
    """Every message this contact was sent (or queued for), newest blast first, with its blast."""
    return contact.recipients.select_related("blast").order_by("-blast__created_at", "-id")
