"""What a sender reads before each send, in as few statements as it can: the recipient with its blast,
contact, opt-out and device; on PostgreSQL the batch's first one within its claim; and, folded into
either, the look for webhook events waiting on the sender's ended sends. Both statements are prepared
on PostgreSQL (blasts/prepared.py): planning their five-table join was most of the database's work
for a read."""

from dataclasses import dataclass, field
from datetime import datetime
from functools import cache

from django.db import DEFAULT_DB_ALIAS, connection, connections

from ..models import Blast, BlastRecipient, Contact, Device, OptOut
from ..prepared import prepared_cursor
from ..tracking.events import webhook_events_apply_waiting, webhook_events_waiting_sql
from .ledger import claim_statement, recipients_claim

# What send_one reads: the recipient (with its blast, contact and `opted_out`) and the blast's device row.
SendRead = tuple[BlastRecipient, Device | None]


@dataclass
class EndedSends:
    """Sends that ended since the last look for events waiting on them: acks that beat the commit of
    their message id, replies that came during the send. The look must come after that commit (the
    applier, too, looks after its own commit, so one of the two sides always sees the other); it is
    folded into the sender's next read, and made on its own when no read follows."""

    message_ids: list[str] = field(default_factory=list)
    recipient_ids: list[int] = field(default_factory=list)

    def add(self, recipient_id: int, message_id: str | None) -> None:
        self.recipient_ids.append(recipient_id)
        if message_id:
            self.message_ids.append(message_id)

    def looked(self, *, waiting: bool) -> None:
        """A look found (`waiting`) or ruled out events waiting on these sends: apply them, forget the sends."""
        if waiting:
            webhook_events_apply_waiting(message_ids=self.message_ids, recipient_ids=self.recipient_ids)
        self.message_ids, self.recipient_ids = [], []

    def look(self) -> None:
        """The look on its own: when no read follows (nothing claimed, the sender stops or fails)."""
        if self.recipient_ids:
            self.looked(waiting=True)


# send_one's read, written once: the recipient with its blast, contact, whether the number opted out,
# and the device's pacing row, in one statement (it was two ORM queries, compiled again for every
# message), with the look for events waiting on the sender's ended sends (EndedSends) at its end.
# The columns come from the models, so a new column is read without a change here.
_SEND_READ = """
    SELECT {columns}, EXISTS (SELECT 1 FROM {optout} o WHERE o.phone = r.phone), {{waiting}}
    FROM {recipient} r
    JOIN {blast} b ON b.id = r.blast_id
    LEFT JOIN {contact} c ON c.id = r.contact_id
    LEFT JOIN {device} d ON d.device_id = b.device
    WHERE r.id = %s"""
# The same read of the rows a claim takes (ledger.CLAIM_SQL returning them whole, as updated), in the
# claim's statement. The look's one row stands when nothing is claimed: it still says what it found.
_CLAIM_AND_READ = """
    WITH claimed AS ({{claim}})
    SELECT {columns}, EXISTS (SELECT 1 FROM {optout} o WHERE o.phone = r.phone), w.waiting
    FROM (SELECT {{waiting}} AS waiting) w
    LEFT JOIN (
        claimed r
        JOIN {blast} b ON b.id = r.blast_id
        LEFT JOIN {contact} c ON c.id = r.contact_id
        LEFT JOIN {device} d ON d.device_id = b.device
    ) ON TRUE
    ORDER BY r.blast_id, r.id"""
_READ_MODELS = (("r", BlastRecipient), ("b", Blast), ("c", Contact), ("d", Device))


@cache
def _send_read_plan(vendor: str) -> tuple[str, str, list[tuple[type, list, int]]]:
    """The read statement, the claim's, and each model with its fields' converters (what the ORM applies
    to a row) and where its primary key is (NULL: no row, as a LEFT JOIN gives for a canary's contact)."""
    quote = connection.ops.quote_name
    columns, plan = [], []
    for alias, model in _READ_MODELS:
        fields = []
        for f in model._meta.concrete_fields:
            columns.append(f"{alias}.{quote(f.column)}")
            col = f.get_col(alias)
            converters = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            fields.append((col, converters))
        plan.append((model, fields, [f.primary_key for f in model._meta.concrete_fields].index(True)))
    tables = {
        name: quote(model._meta.db_table)
        for name, model in (
            ("recipient", BlastRecipient),
            ("blast", Blast),
            ("contact", Contact),
            ("device", Device),
            ("optout", OptOut),
        )
    }
    # The claim and the look are filled in on each call (their parameters vary): left in the text here.
    columns = ", ".join(columns)
    return (
        _SEND_READ.format(columns=columns, **tables),
        _CLAIM_AND_READ.format(columns=columns, **tables),
        plan,
    )


def _look(ended: EndedSends | None, db) -> tuple[str, list]:
    """The look for events waiting on `ended` as a boolean column (FALSE: nothing to look for)."""
    if ended and ended.recipient_ids:
        return webhook_events_waiting_sql(ended.message_ids, ended.recipient_ids, db)
    return "FALSE", []


def recipient_for_send(pk: int, *, ended: EndedSends | None = None) -> SendRead:
    """The claimed recipient with its blast, contact and `opted_out`, and the blast's device row (None
    before its first use): one statement, which also looks for events waiting on `ended`."""
    db = connections[DEFAULT_DB_ALIAS]  # once: `connection` looks itself up on every use
    sql, _, plan = _send_read_plan(db.vendor)
    look, look_params = _look(ended, db)
    with prepared_cursor() as cursor:
        cursor.execute(sql.format(waiting=look), [*look_params, pk])
        row = cursor.fetchone()
    if row is None:
        raise BlastRecipient.DoesNotExist(f"recipient {pk} does not exist")
    if ended and ended.recipient_ids:
        ended.looked(waiting=bool(row[-1]))
    return _send_read(row, plan, db)


def recipients_claim_and_read(
    *, worker: str, limit: int, now: datetime, blast_id: int | None, skip_devices, ended: EndedSends
) -> tuple[list[int], SendRead | None]:
    """recipients_claim and, on PostgreSQL in the same statement, recipient_for_send of the first claimed
    recipient (the next to send) with the look for events waiting on `ended`: one round trip fewer."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        ids = recipients_claim(
            worker=worker, limit=limit, now=now, blast_id=blast_id, skip_devices=skip_devices
        )
        return ids, None
    _, sql, plan = _send_read_plan(db.vendor)
    claim, claim_params = claim_statement(
        worker=worker, limit=limit, now=now, blast_id=blast_id, skip_devices=skip_devices, returning="*"
    )
    look, look_params = _look(ended, db)
    with prepared_cursor() as cursor:
        cursor.execute(sql.format(claim=claim, waiting=look), [*claim_params, *look_params])
        rows = cursor.fetchall()
    if ended.recipient_ids:
        ended.looked(waiting=bool(rows[0][-1]))
    id_at = plan[0][2]  # the recipient's id, NULL in the look's row when nothing was claimed
    claimed = [row for row in rows if row[id_at] is not None]
    return [row[id_at] for row in claimed], _send_read(claimed[0], plan, db) if claimed else None


def _send_read(row: tuple, plan: list, db) -> SendRead:
    """A row of _SEND_READ or _CLAIM_AND_READ as the ORM would give it."""
    objects, at = [], 0
    for model, fields, pk_at in plan:
        values = []
        for col, converters in fields:
            value = row[at]
            for convert in converters:
                value = convert(value, col, db)
            values.append(value)
            at += 1
        objects.append(model.from_db(db.alias, None, values) if values[pk_at] is not None else None)
    recipient, blast, contact, device = objects
    recipient.blast = blast
    recipient.contact = contact
    recipient.opted_out = bool(row[at])
    return recipient, device
