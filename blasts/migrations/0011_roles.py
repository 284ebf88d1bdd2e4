"""The roles as groups: Viewer, Marketer, Admin (access.py names the permission of each action).

The lists are written out here, not imported: a migration must mean the same whenever it runs.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = [
    "blasts.view_blast",
    "blasts.view_blastrecipient",
    "blasts.view_statushistory",
    "blasts.view_optout",
    "blasts.view_device",
    "blasts.view_auditrecord",
]
MARKETER = [
    *VIEWER,
    "blasts.add_blast",
    "blasts.change_blast",
    "blasts.send_blast",
    "blasts.export_recipients",
    "blasts.mark_blastrecipient",
    "blasts.add_optout",
    "blasts.change_optout",
    "blasts.delete_optout",
]
ADMIN = ["auth.add_user", "auth.change_user", "auth.view_user", "auth.view_group"]  # + all of blasts


def make_roles(apps, schema_editor):
    for label in ("auth", "blasts"):  # permissions are made after migrate; these need them now
        config = apps.get_app_config(label)
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def permissions(names):
        wanted = [name.split(".") for name in names]
        found = [
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
            for app_label, codename in wanted
        ]
        return found

    every_blasts = list(Permission.objects.filter(content_type__app_label="blasts"))
    roles = {"Viewer": permissions(VIEWER), "Marketer": permissions(MARKETER)}
    roles["Admin"] = every_blasts + permissions(ADMIN)
    for name, granted in roles.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(granted)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Viewer", "Marketer", "Admin"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("blasts", "0010_team_access"),
    ]
    operations = [migrations.RunPython(make_roles, remove_roles)]
