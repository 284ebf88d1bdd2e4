"""The audit trail: who did what, when and through which interface. Rows are only ever added."""

from dataclasses import dataclass
from typing import Any

from .models import AuditRecord, Blast
from .text import clean_json, clean_text, fit

Via = AuditRecord.Via
Did = AuditRecord.Action


@dataclass(frozen=True)
class Actor:
    """Who acts (None: the system itself) and through which interface."""

    user: Any
    via: Via

    def __str__(self) -> str:
        return str(self.user) if self.user else "the system"


SYSTEM = Actor(None, Via.SYSTEM)


def audit_record(by: Actor, action: Did, *, blast: Blast | None = None, about: Any = None, **detail) -> None:
    """Append one row: `about` is the object acted on when it is not the blast (a recipient, a number);
    `detail` keeps what explains the action (a reason, the filter and row count of an export)."""
    user = by.user if by.user is not None and by.user.is_authenticated else None
    AuditRecord.objects.create(
        actor=user,
        actor_name=fit(AuditRecord, "actor_name", user.get_username() if user else ""),
        via=by.via,
        action=action,
        blast=blast,
        about=fit(AuditRecord, "about", clean_text(str(about if about is not None else blast or ""))),
        detail=clean_json(detail),  # filters and notes are text from outside: storable in jsonb
    )
