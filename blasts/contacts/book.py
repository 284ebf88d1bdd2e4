"""Contacts made or updated from what comes in: a blast's recipients, an import, the API, a person.

One rule for every path (contacts_upsert): one contact per E.164 number; a name given now wins over
the one kept (an empty one does not erase it); attributes merge, the new value of a key winning
(an empty cell erases nothing); tags are added, never removed.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from ..audit import Actor, Did, audit_record
from ..models import PLACEHOLDER, Contact, ContactTag
from ..recipients import Recipient, attribute_key, attribute_placeholders
from ..text import clean_text, fit

BATCH = 1000
ATTRIBUTE_VALUE_MAX = 500  # characters kept of one attribute's value


@dataclass
class ContactIn:
    phone: str  # E.164, already normalised
    name: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    def merge(self, later: "ContactIn") -> None:
        """The same number twice in one input: the later row's name and values win, tags add up."""
        self.name = later.name or self.name
        self.attributes |= later.attributes
        self.tags += [tag for tag in later.tags if tag not in self.tags]


@dataclass
class Upserted:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    ids: dict[str, int] = field(default_factory=dict)  # phone -> contact id

    def add(self, other: "Upserted") -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.ids |= other.ids


def attribute_values(raw: dict) -> dict[str, str]:
    """Attributes as stored: keys made placeholder-safe, values as text, storable, empty ones left out."""
    clean = {}
    for key, value in raw.items():
        key = attribute_key(clean_text(str(key)))
        value = clean_text(str(value if value is not None else "")).strip()[:ATTRIBUTE_VALUE_MAX]
        if key and value:
            clean[key] = value
    return clean


def tag_names(raw: Iterable[str]) -> list[str]:
    """Tags as stored: trimmed, storable, cut to their column, each once, empty ones left out."""
    names = (fit(ContactTag, "name", clean_text(str(tag)).strip()) for tag in raw)
    return list(dict.fromkeys(name for name in names if name))


def contacts_upsert(people: Iterable[ContactIn], *, batch: int = BATCH) -> Upserted:
    """Create or update one contact per number (the module's rule), in batches of `batch` numbers;
    what was created, updated and left unchanged, and each number's contact id."""
    total, chunk = Upserted(), {}
    for person in people:
        if person.phone in chunk:
            chunk[person.phone].merge(person)
        else:
            chunk[person.phone] = ContactIn(
                person.phone, person.name, dict(person.attributes), list(person.tags)
            )
        if len(chunk) >= batch:
            total.add(_upsert_batch(chunk))
            chunk = {}
    if chunk:
        total.add(_upsert_batch(chunk))
    return total


def _upsert_batch(chunk: dict[str, ContactIn]) -> Upserted:
    now = timezone.now()
    done = Upserted()
    with transaction.atomic():
        existing = {
            c.phone: c
            for c in Contact.objects.filter(phone__in=list(chunk))
            .order_by()
            .only("phone", "name", "attributes")
        }
        new, changed = [], []
        for phone, person in chunk.items():
            name = fit(Contact, "name", clean_text(person.name).strip())
            attributes = attribute_values(person.attributes)
            contact = existing.get(phone)
            if contact is None:
                new.append(
                    Contact(
                        phone=phone, name=name, attributes=attributes, first_seen_at=now, last_seen_at=now
                    )
                )
                continue
            merged = contact.attributes | attributes
            if (name and name != contact.name) or merged != contact.attributes:
                contact.name, contact.attributes = name or contact.name, merged
                changed.append(contact)
        # ignore_conflicts: a number another process added meanwhile is kept as that process made it.
        Contact.objects.bulk_create(new, ignore_conflicts=True)
        _contacts_update(changed)
        Contact.objects.filter(phone__in=list(existing)).update(last_seen_at=now)
        done.ids = dict(Contact.objects.filter(phone__in=list(chunk)).order_by().values_list("phone", "pk"))
        done.created, done.updated = len(new), len(changed)
        done.unchanged = len(existing) - len(changed)
        _tags_add({done.ids[phone]: person.tags for phone, person in chunk.items() if person.tags})
    return done


def _contacts_update(changed: list[Contact]) -> None:
    """Write changed names and attributes. On PostgreSQL one UPDATE from arrays: Django's bulk_update
    builds a CASE per row and field, which was two thirds of a 100,000-contact re-import (bench/imports.py)."""
    if not changed:
        return
    if connection.vendor != "postgresql":
        Contact.objects.bulk_update(changed, ["name", "attributes"])
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Contact._meta.db_table} AS c SET name = v.name, attributes = v.attributes::jsonb "
            "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, name, attributes) WHERE c.id = v.id",
            [[c.pk for c in changed], [c.name for c in changed], [json.dumps(c.attributes) for c in changed]],
        )


def _tags_add(tags_by_contact: dict[int, list[str]]) -> None:
    """Add tags to contacts (making the tags that do not exist yet)."""
    names = {name for tags in tags_by_contact.values() for name in tag_names(tags)}
    if not names:
        return
    ContactTag.objects.bulk_create([ContactTag(name=name) for name in names], ignore_conflicts=True)
    ids = dict(ContactTag.objects.filter(name__in=names).values_list("name", "pk"))
    Through = Contact.tags.through
    links = [
        Through(contact_id=contact, contacttag_id=ids[name])
        for contact, tags in tags_by_contact.items()
        for name in tag_names(tags)
    ]
    Through.objects.bulk_create(links, ignore_conflicts=True)


def with_stored_attributes(recipients: list[Recipient]) -> list[Recipient]:
    """The recipients with their contacts' stored attributes under the ones given now (as the blast
    will have them once made): for the preview, before anything is written."""
    stored: dict[str, dict] = {}
    phones = [r.phone for r in recipients]
    for start in range(0, len(phones), BATCH):
        stored |= dict(
            Contact.objects.filter(phone__in=phones[start : start + BATCH])
            .exclude(attributes={})
            .values_list("phone", "attributes")
        )
    return [
        replace(r, attributes=stored[r.phone] | attribute_values(r.attributes)) if r.phone in stored else r
        for r in recipients
    ]


def message_check(message: str, has_key) -> None:
    """Refuse a message with an attribute placeholder no recipient has: a typo ({nmae}) or a column
    the list does not have. `has_key(key)` says whether any recipient has the attribute."""
    unknown = [key for key in attribute_placeholders(message) if not has_key(key)]
    if unknown:
        names = ", ".join(f"{{{key}}}" for key in unknown)
        choice = next(
            (m for m in PLACEHOLDER.finditer(message) if m[1] in unknown and m[2] is not None), None
        )
        hint = (
            f" For varied wording, start the choice with a capital: {{{choice[1].capitalize()}|{choice[2]}}}."
            if choice
            else ""
        )
        raise ValidationError(
            {
                "message": f"No recipient has {names}: use {{name}}, {{first_name}}, {{phone}} or an "
                f"attribute your contacts have (a column of the file or an import, e.g. {{city}}).{hint}"
            }
        )


# --- one contact, changed by a person (the pages, the API, the admin) -----------------------------

ATTRIBUTES_MAX = 50  # keys on one contact
TAGS_MAX = 50  # tags on one contact


def attributes_check(raw) -> dict[str, str]:
    """Attributes a person gave, as stored (attribute_values), or ValidationError saying what is wrong:
    an object of texts (numbers are taken as text), keys with a letter or digit, no NUL character."""
    if not isinstance(raw, dict):
        raise ValidationError('Attributes are an object of texts, e.g. {"city": "Ipoh"}.')
    if len(raw) > ATTRIBUTES_MAX:
        raise ValidationError(f"At most {ATTRIBUTES_MAX} attributes.")
    for key, value in raw.items():
        shown = clean_text(str(key))[:50]
        if value is not None and (not isinstance(value, str | int | float) or isinstance(value, bool)):
            raise ValidationError(
                f"The value of “{shown}” must be a text (or a number), not a list or object."
            )
        if "\x00" in str(key) or "\x00" in str(value if value is not None else ""):
            raise ValidationError(f"“{shown}” has a NUL character: take it out.")
        if not attribute_key(clean_text(str(key))):
            raise ValidationError(f"The attribute name “{shown}” needs a letter or digit.")
        if len(str(value if value is not None else "").strip()) > ATTRIBUTE_VALUE_MAX:
            raise ValidationError(f"The value of “{shown}” is longer than {ATTRIBUTE_VALUE_MAX} characters.")
    return attribute_values(raw)


def contact_edit(
    *,
    contact: Contact,
    by: Actor,
    name: str | None = None,
    attributes: dict | None = None,
    tags: Iterable[str] | None = None,
) -> list[str]:
    """A person changes a contact as stored: its name; its attributes (replaced: a key left out or
    empty is removed); its tags (exactly these, made when new). None leaves that part as it is.
    Returns the parts that changed, which the audit row names."""
    stored = Contact.objects.get(pk=contact.pk)
    changed = []
    with transaction.atomic():
        if name is not None and (name := fit(Contact, "name", clean_text(name).strip())) != stored.name:
            stored.name = name
            changed.append("name")
        if attributes is not None and (attributes := attribute_values(attributes)) != stored.attributes:
            stored.attributes = attributes
            changed.append("attributes")
        if changed:
            stored.save(update_fields=changed)
        if tags is not None:
            names = tag_names(tags)
            if set(names) != set(stored.tags.values_list("name", flat=True)):
                ContactTag.objects.bulk_create([ContactTag(name=n) for n in names], ignore_conflicts=True)
                stored.tags.set(ContactTag.objects.filter(name__in=names))
                changed.append("tags")
        if changed:
            audit_record(by, Did.CONTACT_SAVED, about=stored, fields=changed)
    contact.name, contact.attributes = stored.name, stored.attributes
    return changed


def contact_create(
    *, phone: str, by: Actor, name: str = "", attributes: dict | None = None, tags: Iterable[str] = ()
) -> Contact:
    """A person adds one contact (`phone` already E.164); a number that is a contact already is refused
    (ValidationError on phone): change that contact instead, so nothing is merged unseen."""
    existing = Contact.objects.filter(phone=phone).values_list("pk", flat=True).first()
    if existing is not None:
        raise ValidationError({"phone": f"{phone} is a contact already (id {existing}): change that one."})
    with transaction.atomic():
        done = contacts_upsert([ContactIn(phone, name, dict(attributes or {}), list(tags))])
        contact = Contact.objects.get(pk=done.ids[phone])
        audit_record(by, Did.CONTACT_SAVED, about=contact, created=True)
    return contact


def contact_delete(*, contact: Contact, by: Actor) -> None:
    """Delete a contact no blast has messaged; one with recipients is refused (ValidationError): its
    rows keep every blast's funnel."""
    try:
        with transaction.atomic():
            contact.delete()
            audit_record(by, Did.CONTACT_SAVED, about=contact, deleted=True)
    except ProtectedError:
        count = contact.recipients.count()
        raise ValidationError(
            f"{contact} is a recipient of {count} blast{'s' if count != 1 else ''}: a contact with messages "
            "stays, so every blast's funnel does. Change it instead."
        ) from None


def contact_tag_add(*, name: str, by: Actor) -> ContactTag:
    """A person adds a tag (to put on contacts); one of that name already is given back unchanged."""
    (name,) = tag_names([name]) or [""]
    if not name:
        raise ValidationError({"name": "Give the tag a name."})
    with transaction.atomic():
        tag, created = ContactTag.objects.get_or_create(name=name)
        if created:
            audit_record(by, Did.CONTACT_SAVED, about=f"tag {tag}", tag_created=True)
    return tag
