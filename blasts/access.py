"""Who may do what: every action a person can take and the one permission it needs.

The pages, the API (api.ActionPermission) and the admin (`permissions=` on its actions) all ask
`may(user, action)` with the action's name here, so a role means the same wherever it is used.
Looking is for every staff login; anything that changes something, or exports phone numbers,
needs its permission. Superusers have every permission. The roles (Viewer, Marketer, Admin) are
groups of these permissions, made by migration 0011_roles; the README's table says what each may do.
"""

from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied

# action: the permission it needs. The names are the ones the pages, the API and the admin use.
NEEDS: dict[str, str] = {
    "create": "blasts.add_blast",
    "follow_up": "blasts.add_blast",
    "edit": "blasts.change_blast",
    "send": "blasts.send_blast",
    "pause": "blasts.send_blast",
    "resume": "blasts.send_blast",
    "cancel": "blasts.send_blast",
    "check_status": "blasts.send_blast",
    "export": "blasts.export_recipients",
    "mark": "blasts.mark_blastrecipient",
    "opt_out": "blasts.change_optout",  # add, remove and import opt-outs
    "opt_out_export": "blasts.export_recipients",  # the list's phone numbers
    "contact_edit": "blasts.change_contact",
    "contact_import": "blasts.add_contact",
    "segment_edit": "blasts.change_segment",  # create and change segments
    "segment_delete": "blasts.delete_segment",
    "resend_unknown": "blasts.resolve_unknown",
    "match": "blasts.resolve_unknown",
    "device": "blasts.change_device",
}


def may(user, action: str) -> bool:
    """Whether this signed-in staff user may take `action` (a name in NEEDS)."""
    return bool(user.is_active and user.is_staff and user.has_perm(NEEDS[action]))


def refusal(action: str) -> str:
    """Why a user may not take `action`, naming the missing permission, for a 403 or a message."""
    app_label, codename = NEEDS[action].split(".")
    permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
    name = permission.name if permission else NEEDS[action]
    return f"Your role does not allow this: it needs the permission “{name}” ({NEEDS[action]}). Ask an admin."


def require(user, action: str) -> None:
    """Raise PermissionDenied (a 403 saying what is missing) unless the user may take `action`."""
    if not may(user, action):
        raise PermissionDenied(refusal(action))


def allowed(user, actions) -> list:
    """The (name, label) pairs of `actions` this user may take: the buttons to show."""
    return [(name, label) for name, label in actions if may(user, name)]
