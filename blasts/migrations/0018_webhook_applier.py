"""Webhook events stored first (RECEIVED), applied by `manage.py apply_events`.

On PostgreSQL a statement-level trigger NOTIFYs the appliers when the webhook stores events, so the
webhook's request does nothing more than its one INSERT; PostgreSQL delivers the notice at commit, and
once per transaction however many rows or statements. The channel's name is written out here: a
migration must mean the same whenever it runs (blasts.tracking.applier.CHANNEL names it too).
"""

from django.db import migrations, models

NOTIFY = """
CREATE OR REPLACE FUNCTION blasts_webhook_events_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('blasts_webhook_events', '');
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER blasts_webhook_events_notify AFTER INSERT ON blasts_webhookevent
    FOR EACH STATEMENT EXECUTE FUNCTION blasts_webhook_events_notify();
"""
UNNOTIFY = """
DROP TRIGGER IF EXISTS blasts_webhook_events_notify ON blasts_webhookevent;
DROP FUNCTION IF EXISTS blasts_webhook_events_notify();
"""


def notify(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(NOTIFY)


def unnotify(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNNOTIFY)


class Migration(migrations.Migration):
    dependencies = [
        ("blasts", "0017_blast_rollup"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookevent",
            name="applied_at",
            field=models.DateTimeField(blank=True, help_text="When the applier last applied it.", null=True),
        ),
        migrations.AlterField(
            model_name="heartbeat",
            name="role",
            field=models.CharField(
                choices=[("sender", "Sender"), ("poller", "Status poller"), ("applier", "Event applier")],
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="webhookevent",
            name="kind",
            field=models.CharField(
                blank=True,
                choices=[("status", "Status"), ("reply", "Reply"), ("unknown", "Not understood")],
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="webhookevent",
            name="state",
            field=models.CharField(
                choices=[
                    ("received", "Received, not applied yet"),
                    ("applied", "Applied"),
                    ("no_change", "No change (duplicate or older)"),
                    ("waiting", "Waiting (an ack for its message id, a reply for its send to end)"),
                    ("unattributed", "Reply from no recent recipient"),
                    ("ignored", "Ignored (status not understood)"),
                    ("review", "Needs review (not understood, or failed to apply)"),
                ],
                max_length=12,
            ),
        ),
        migrations.AddIndex(
            model_name="webhookevent",
            index=models.Index(
                condition=models.Q(("state", "received")), fields=["id"], name="webhook_unapplied"
            ),
        ),
        migrations.RunPython(notify, unnotify, elidable=False),
    ]
