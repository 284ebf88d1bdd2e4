"""Contacts for every recipient so far (merged by phone, the newest non-empty name kept), each
recipient linked to its contact; opt-outs' sources from their reasons; the roles' new permissions.

The permission lists are written out here, not imported: a migration must mean the same whenever it runs.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.db.models import Max, Min, OuterRef, Subquery

VIEWER = ["blasts.view_contact", "blasts.view_contacttag", "blasts.view_segment"]
MARKETER = [
    *VIEWER,
    "blasts.add_contact",
    "blasts.change_contact",
    "blasts.add_contacttag",
    "blasts.change_contacttag",
    "blasts.add_segment",
    "blasts.change_segment",
    "blasts.delete_segment",
]
BATCH = 2000


def contacts_from_recipients(apps, schema_editor):
    Contact = apps.get_model("blasts", "Contact")
    BlastRecipient = apps.get_model("blasts", "BlastRecipient")
    people = BlastRecipient.objects.filter(is_canary=False)
    seen = people.values("phone").annotate(first=Min("blast__created_at"), last=Max("blast__created_at"))
    newest_name = (
        people.filter(phone=OuterRef("phone")).exclude(name="").order_by("-blast__created_at", "-id").values("name")
    )
    rows = seen.annotate(name=Subquery(newest_name[:1])).order_by("phone")
    batch = []
    for row in rows.iterator(chunk_size=BATCH):
        batch.append(
            Contact(phone=row["phone"], name=row["name"] or "", first_seen_at=row["first"], last_seen_at=row["last"])
        )
        if len(batch) == BATCH:
            Contact.objects.bulk_create(batch)
            batch = []
    Contact.objects.bulk_create(batch)
    people.update(contact_id=Subquery(Contact.objects.filter(phone=OuterRef("phone")).values("pk")[:1]))

    OptOut = apps.get_model("blasts", "OptOut")
    OptOut.objects.filter(reason__startswith="Replied").update(source="reply")


def grant(apps, schema_editor):
    config = apps.get_app_config("blasts")
    config.models_module = True
    create_permissions(config, apps=apps, verbosity=0)  # made after migrate otherwise; needed now
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def permissions(names):
        return [Permission.objects.get(content_type__app_label="blasts", codename=n.split(".")[1]) for n in names]

    roles = {
        "Viewer": permissions(VIEWER),
        "Marketer": permissions(MARKETER),
        "Admin": list(Permission.objects.filter(content_type__app_label="blasts")),
    }
    for group in Group.objects.filter(name__in=roles):
        group.permissions.add(*roles[group.name])


class Migration(migrations.Migration):
    dependencies = [("blasts", "0014_contacts"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [
        migrations.RunPython(contacts_from_recipients, migrations.RunPython.noop),
        migrations.RunPython(grant, migrations.RunPython.noop),
    ]
