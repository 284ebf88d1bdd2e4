"""Every write with a side effect. Views, admin, API, commands and webhooks call these."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone

from .audit import SYSTEM, Actor, Did, audit_record
from .bulk import rows_insert, rows_update
from .contacts.book import ContactIn, contacts_upsert, message_check
from .models import (
    AuditRecord,
    Blast,
    BlastRecipient,
    Contact,
    Device,
    Heartbeat,
    OptOut,
    Segment,
    StatusHistory,
    VariantTest,
    WebhookEvent,
)
from .prepared import param_type, prepared_cursor
from .recipients import ParsedRecipients, normalize_phone
from .statuses import ACTIVE, STAGE_TIME_FIELDS, can_move
from .text import fit
from .variants import HELD, variant_test_check, variants_assign, variants_check

Status = BlastRecipient.Status
Source = StatusHistory.Source


def recipient_advance(
    *,
    recipient: BlastRecipient | int,
    status: Status,
    source: Source,
    occurred_at: datetime | None = None,
    raw: Any = None,
    reason: str = "",
    actor=None,
    held_by: str | None = None,
    lease_ended_before: datetime | None = None,
    also: dict | None = None,
) -> bool:
    """Apply `status` to the recipient if the forward-only rule allows it; return whether it did.

    The only function that changes a recipient's status. Under the row's lock it reads the
    status, writes the new one, sets the first-reached time of the new stage and of every
    earlier stage still without one, and appends exactly one StatusHistory row.
    `reason` explains a FAILED, UNKNOWN or SKIPPED status and is kept on the recipient.
    `held_by`: only while that sender holds its claim on the row and the blast is active.
    `lease_ended_before`: only a send whose lease ran out before then (its sender stopped).
    `also` sets other columns to plain values in the same write (e.g. the message id with PENDING).
    """
    pk = recipient.pk if isinstance(recipient, BlastRecipient) else recipient
    db = connections[DEFAULT_DB_ALIAS]  # `connection` looks itself up on every use: a send makes ~40
    now = timezone.now()
    changes: dict[str, Any] = {**(also or {}), "status": status, "status_changed_at": now}
    if reason:
        changes["failure_reason"] = reason
    firsts = [field for stage, field in STAGE_TIME_FIELDS if stage <= status]
    firsts += ["failed_at"] if status == Status.FAILED else []
    where, where_params = ["id = %s"], [pk]
    if held_by is not None:
        where.append(HELD_BY)
        where_params += [held_by, *ACTIVE]
    if lease_ended_before is not None:
        where.append(LEASE_ENDED)
        where_params += [Status.SENDING, _prepared("claimed_until", lease_ended_before, db)]
    assign, assign_params = [], []
    for name, value in changes.items():
        if hasattr(value, "resolve_expression"):
            raise TypeError(f"recipient_advance sets plain values, not {name}={value!r}")
        assign.append(f"{_column(name, db.vendor)} = %s")
        assign_params.append(_prepared(name, value, db))
    for name in firsts:  # only where not reached before
        assign.append(f"{name} = COALESCE({name}, %s)")
        assign_params.append(_prepared(name, occurred_at or now, db))
    history = StatusHistory(
        recipient_id=pk,
        to_status=status,
        source=source,
        occurred_at=occurred_at,
        recorded_at=now,
        actor=actor,
        raw=raw,
    )
    movable = [current for current in Status if can_move(current, status)]
    write = _advance_in_one_statement if db.vendor == "postgresql" else _advance_under_lock
    found, moved = write(
        pk, (" AND ".join(where), where_params), (", ".join(assign), assign_params), movable, history
    )
    if not found and not (len(where) > 1 and BlastRecipient.objects.filter(pk=pk).exists()):
        raise BlastRecipient.DoesNotExist(f"recipient {pk} does not exist")
    if moved and isinstance(recipient, BlastRecipient):
        recipient.refresh_from_db(fields=[*changes, *firsts])
    return moved


@dataclass(frozen=True)
class Advance:
    """One status change for recipients_advance_many (recipient_advance's arguments, for one row)."""

    recipient: int
    status: int
    occurred_at: datetime | None = None
    raw: Any = None
    reason: str = ""


def recipients_advance_many(advances: list[Advance], *, source: Source) -> list[bool]:
    """recipient_advance for many changes, in the caller's transaction: set-based, same rule.

    The rows are locked in id order (two appliers never deadlock on them), each change is judged
    in the given order as if applied alone (can_move, first-reached times kept), then every changed
    row is written in one UPDATE and every applied change logged in one multi-row INSERT.
    Returns, per change, whether it applied.
    """
    now, fields = timezone.now(), [*ADVANCED_FIELDS]
    wanted = {advance.recipient for advance in advances}
    locked = BlastRecipient.objects.select_for_update().filter(pk__in=wanted).order_by("pk").only(*fields)
    rows = {row.pk: row for row in locked}
    if missing := wanted - rows.keys():
        raise BlastRecipient.DoesNotExist(f"recipients {sorted(missing)} do not exist")
    moved, history, changed = [], [], {}
    for advance in advances:
        row = rows[advance.recipient]
        moved.append(can_move(row.status, advance.status))
        if not moved[-1]:
            continue
        history.append(
            StatusHistory(
                recipient_id=row.pk,
                from_status=row.status,
                to_status=advance.status,
                source=source,
                occurred_at=advance.occurred_at,
                recorded_at=now,
                raw=advance.raw,
            )
        )
        row.status, row.status_changed_at = advance.status, now
        row.failure_reason = advance.reason or row.failure_reason
        firsts = [field for stage, field in STAGE_TIME_FIELDS if stage <= advance.status]
        for field in firsts + (["failed_at"] if advance.status == Status.FAILED else []):
            if getattr(row, field) is None:
                setattr(row, field, advance.occurred_at or now)
        changed[row.pk] = row
    rows_update(BlastRecipient, list(changed.values()), fields)
    rows_insert(StatusHistory, history)
    return moved


ADVANCED_FIELDS = (
    "status",
    "status_changed_at",
    "failure_reason",
    "failed_at",
    *dict(STAGE_TIME_FIELDS).values(),
)


# The conditions a caller may put on an advance (recipient_advance's held_by and lease_ended_before).
HELD_BY = (
    "claimed_by = %s AND blast_id IN "
    f"(SELECT id FROM blasts_blast WHERE state IN ({', '.join(['%s'] * len(ACTIVE))}))"
)
LEASE_ENDED = "status = %s AND claimed_until < %s"

# recipient_advance's write on PostgreSQL as one statement, so one round trip: `old` locks and reads
# the row if the conditions hold, `moved` updates it if the rule allows, `logged` appends the history.
ADVANCE_SQL = """
    WITH old AS (SELECT status FROM blasts_blastrecipient WHERE {where} FOR UPDATE),
    moved AS (
        UPDATE blasts_blastrecipient SET {assign}
        WHERE id = %s AND (SELECT status FROM old) = ANY(%s) RETURNING 1
    ),
    logged AS (
        INSERT INTO blasts_statushistory (from_status, {logged}) SELECT (SELECT status FROM old), {values} FROM moved
    )
    SELECT EXISTS (SELECT 1 FROM old), EXISTS (SELECT 1 FROM moved)"""


def _prepared(name: str, value: Any, db=connection) -> Any:
    """A recipient column's value as the database takes it (aware times, JSON, choices)."""
    return BlastRecipient._meta.get_field(name).get_db_prep_save(value, db)


@cache
def _column(name: str, vendor: str) -> str:
    """A recipient field's column, quoted for the database (the same for every call)."""
    return connection.ops.quote_name(BlastRecipient._meta.get_field(name).column)


@cache
def _history_insert() -> tuple[tuple, str, str]:
    """StatusHistory's fields that ADVANCE_SQL inserts (all but the id and from_status, which it reads),
    their columns, and their parameters cast to the columns' types (sent apart, text would be unknown)."""
    fields = tuple(f for f in StatusHistory._meta.concrete_fields if f.name not in ("id", "from_status"))
    casts = ", ".join(f"CAST(%s AS {param_type(field, connection)})" for field in fields)
    return fields, ", ".join(field.column for field in fields), casts


def _advance_under_lock(pk, where, assign, movable, history) -> tuple[bool, bool]:
    """The write in a transaction (SQLite's are IMMEDIATE: locked from the start). (found, moved)"""
    (where, where_params), (assign, assign_params) = where, assign
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT status FROM blasts_blastrecipient WHERE {where}", where_params)
        row = cursor.fetchone()
        if row is None or row[0] not in movable:
            return row is not None, False
        cursor.execute(f"UPDATE blasts_blastrecipient SET {assign} WHERE id = %s", [*assign_params, pk])
        history.from_status = row[0]
        history.save(force_insert=True)
    return True, True


def _advance_in_one_statement(pk, where, assign, movable, history) -> tuple[bool, bool]:
    """The same write as ADVANCE_SQL: one PostgreSQL statement, prepared (blasts/prepared.py): the sender
    runs it twice a message. (found, moved)"""
    (where, where_params), (assign, assign_params) = where, assign
    db = connections[DEFAULT_DB_ALIAS]
    logged, columns, casts = _history_insert()
    values = [field.get_db_prep_save(field.value_from_object(history), db) for field in logged]
    sql = ADVANCE_SQL.format(where=where, assign=assign, logged=columns, values=casts)
    with prepared_cursor() as cursor:
        cursor.execute(sql, [*where_params, *assign_params, pk, movable, *values])
        return cursor.fetchone()


@dataclass(frozen=True)
class BlastCreated:
    blast: Blast
    created: int
    duplicates: int
    opted_out: int  # created as SKIPPED: the number is on the opt-out list
    canaries: int = 0  # the team's phones added (CANARY_PHONES), not counted in `created`


CANARY_NAME = "Team canary"


def canary_phones() -> list[str]:
    """The team's canary phones (CANARY_PHONES) as E.164, each once: never contacts."""
    return list(dict.fromkeys(normalize_phone(raw) for raw in settings.CANARY_PHONES))


def with_canaries(audience: list) -> list[BlastRecipient]:
    """The audience as unsaved rows, with the team's canary phones spread over the first, middle and
    last positions (one canary: first; two: first and last). A canary phone in the audience stays a canary."""
    canaries = canary_phones()
    rows = [BlastRecipient(phone=r.phone, name=r.name) for r in audience if r.phone not in canaries]
    last = len(rows) + len(canaries) - 1
    for index, phone in enumerate(canaries):
        position = round(index * last / (len(canaries) - 1)) if len(canaries) > 1 else 0
        rows.insert(position, BlastRecipient(phone=phone, name=CANARY_NAME, is_canary=True))
    return rows


def blast_create(
    *,
    tag: str,
    message: str,
    recipients: ParsedRecipients,
    device: str,
    follow_up_stage: str = "Initial",
    scheduled_at: datetime | None = None,
    parent: Blast | None = None,
    segment: Segment | None = None,
    variants: list[str] = (),
    track_links: bool = True,
    test: VariantTest | None = None,
    by: Actor = SYSTEM,
) -> BlastCreated:
    """Create a draft blast with its recipients, or raise ValidationError and create nothing.

    Every recipient (but the team's canaries) becomes or updates its contact (contacts_upsert: a
    name given now wins, attributes merge) and is linked to it. Recipients start QUEUED; numbers on
    the opt-out list start SKIPPED, with the reason. With `variants` (the messages of B to E),
    recipients are split between A (`message`) and them at random, evenly; with a `test` (unsaved: its
    share, wait and metric), only its share is, and the rest are held for the winner (sending/winner.py).
    The audit trail says who
    created it (a follow-up when it has a parent, the segment when it came from one).
    """
    if recipients.errors:
        raise ValidationError({"recipients": recipients.errors})
    blast = Blast(
        tag=tag.strip(),
        follow_up_stage=follow_up_stage.strip(),
        message=message,
        device=device.strip(),
        scheduled_at=scheduled_at,
        parent=parent,
        segment=segment,
        variants=variants_check(list(variants)),
        track_links=track_links,
        created_by=by.user,
    )
    blast.full_clean()
    variant_test_check(blast.variants, test)
    with transaction.atomic():
        blast.save()
        if test is not None:
            test.blast = blast
            test.save()
        rows = with_canaries(recipients.recipients)
        people = [ContactIn(r.phone, r.name, r.attributes) for r in recipients.recipients]
        contacts = contacts_upsert(person for person in people if person.phone not in canary_phones())
        letters = "".join(blast.messages) if blast.variants else ""
        share = test.share if test else None
        split = variants_assign(blast.pk, [row.phone for row in rows], letters, share) if letters else {}
        for row in rows:
            row.blast, row.contact_id = blast, None if row.is_canary else contacts.ids[row.phone]
            row.variant = split.get(row.phone, "")
            row.next_attempt_at = HELD if letters and not row.variant else None
        BlastRecipient.objects.bulk_create(
            rows, batch_size=1000
        )  # in send order: canaries first, middle, last
        for text in blast.messages.values():
            message_check(
                text,
                lambda key: Contact.objects.filter(recipients__blast=blast, attributes__has_key=key).exists(),
            )
        opted_out = blast.recipients.filter(phone__in=OptOut.objects.values("phone")).values_list(
            "pk", flat=True
        )
        skipped = sum(
            recipient_advance(recipient=pk, status=Status.SKIPPED, source=Source.SEND, reason="Opted out")
            for pk in list(opted_out)
        )
        canaries = sum(row.is_canary for row in rows)
        did, about = (Did.FOLLOW_UP, f"follow-up of {parent}") if parent else (Did.CREATED, None)
        about = f"from the segment {segment}" if segment else about
        audit_record(by, did, blast=blast, about=about, recipients=len(rows) - canaries, opted_out=skipped)
    return BlastCreated(blast, len(rows) - canaries, recipients.duplicates, skipped, canaries)


def blast_edit(*, blast: Blast, changed: list[str], by: Actor) -> None:
    """Save a person's edits of a blast's fields (the admin's form) and say which changed."""
    with transaction.atomic():
        blast.save()
        audit_record(by, Did.EDITED, blast=blast, fields=changed)


def recipient_mark(
    *, recipient: BlastRecipient, status: Status, by: Actor, note: str = "", deal_value=None
) -> bool:
    """A person marks a recipient replied or closed (a sale, with its value) through the ledger, with
    an optional note; False: it was there or past it already."""
    also = {"mark_note": fit(BlastRecipient, "mark_note", note), "deal_value": deal_value}
    with transaction.atomic():
        changed = recipient_advance(
            recipient=recipient, status=status, source=Source.MANUAL, actor=by.user, also=also
        )
        blast = Blast(pk=recipient.blast_id) if isinstance(recipient, BlastRecipient) else None
        detail = {"status": status.name, "changed": changed}
        detail |= ({"note": note} if note else {}) | (
            {"deal_value": str(deal_value)} if deal_value is not None else {}
        )
        audit_record(by, Did.MARKED, blast=blast, about=recipient, **detail)
    return changed


def recipients_exported(*, blast: Blast, filters: dict, rows: int, by: Actor) -> None:
    """Someone downloaded recipients' phone numbers: which blast, with which filter, how many rows."""
    audit_record(by, Did.EXPORTED, blast=blast, filters=filters, rows=rows)


def device_change(*, device: Device, changed: list[str], by: Actor) -> None:
    """Save a person's change of a device's pacing or label."""
    with transaction.atomic():
        device.save()
        audit_record(by, Did.DEVICE_CHANGED, about=device, fields=changed)


def worker_heartbeat(*, role: str, name: str, note: str = "") -> None:
    """Record that a worker is alive (and what it did last); staff see it on the status page."""
    now = timezone.now()
    Heartbeat.objects.update_or_create(
        name=name[:100],
        defaults={"role": role, "seen_at": now, "note": note[:200]},
        create_defaults={"role": role, "seen_at": now, "started_at": now, "note": note[:200]},
    )


def records_prune(*, older_than: timedelta, batch: int = 5000) -> dict[str, int]:
    """Delete raw webhook events and status history older than `older_than`, and audit rows older than
    AUDIT_KEEP_DAYS; return how many of each.

    Funnel counts never change: they are read from each recipient's current status and stage times,
    not from history. Events not applied yet, or waiting for their send, are kept, whatever their age.
    """
    cutoff = timezone.now() - older_than
    audit_cutoff = timezone.now() - timedelta(days=settings.AUDIT_KEEP_DAYS)
    old = {
        "webhook events": WebhookEvent.objects.filter(received_at__lt=cutoff).exclude(
            state__in=[WebhookEvent.State.WAITING, WebhookEvent.State.RECEIVED]
        ),
        "history rows": StatusHistory.objects.filter(recorded_at__lt=cutoff),
        "audit rows": AuditRecord.objects.filter(at__lt=audit_cutoff),
    }
    deleted = dict.fromkeys(old, 0)
    for name, rows in old.items():
        while ids := list(rows.values_list("pk", flat=True)[:batch]):  # short transactions, bounded memory
            deleted[name] += rows.model.objects.filter(pk__in=ids).delete()[0]
    return deleted
