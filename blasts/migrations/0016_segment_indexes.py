"""Indexes for counting segments over a million contacts (bench/contacts.py measures them).

On PostgreSQL only (SQLite compares case with LIKE and has no INCLUDE), built CONCURRENTLY so a
deploy does not stop the senders and webhooks writing recipients while they build:

- blast_tag_upper, blast_stage_upper: a rule "in a blast tagged Raya" compares UPPER(tag). Without
  an index on the expression PostgreSQL has no statistics for it and guesses 0.5% of the blasts
  match (a tag used by one blast in ten is 20 times that), and plans the segment from the wrong end.
- recipient_contact_sent: "messaged fewer than K times in N days" counts each contact's sent
  messages in the window; (contact, sent_at) with the status alongside answers that from the index
  alone, instead of reading every one of the contact's recipient rows.

The names are written out here, not imported: a migration must mean the same whenever it runs.
"""

from django.db import migrations

INDEXES = {
    "blast_tag_upper": 'blasts_blast (UPPER("tag"))',
    "blast_stage_upper": 'blasts_blast (UPPER("follow_up_stage"))',
    "recipient_contact_sent": 'blasts_blastrecipient ("contact_id", "sent_at") INCLUDE ("status")',
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, definition in INDEXES.items():
        # A build that failed half way leaves an invalid index by the same name: start again.
        schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
        schema_editor.execute(f'CREATE INDEX CONCURRENTLY "{name}" ON {definition}')
    for table in ("blasts_blast", "blasts_blastrecipient"):
        schema_editor.execute(f"ANALYZE {table}")  # the expressions' statistics, now rather than later


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("blasts", "0015_contacts_from_recipients")]
    operations = [migrations.RunPython(create, drop, elidable=False)]
