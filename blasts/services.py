"""Every write with a side effect. Views, admin, API, commands and webhooks call these."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .models import Blast, BlastRecipient, StatusHistory
from .recipients import ParsedRecipients
from .statuses import STAGE_TIME_FIELDS, can_move

Status = BlastRecipient.Status
Source = StatusHistory.Source

_TIME_FIELDS = [name for _, name in STAGE_TIME_FIELDS] + ["failed_at"]


def recipient_advance(
    *,
    recipient: BlastRecipient | int,
    status: Status,
    source: Source,
    occurred_at: datetime | None = None,
    raw: Any = None,
    reason: str = "",
    actor=None,
) -> bool:
    """Apply `status` to the recipient if the forward-only rule allows it; return whether it did.

    `reason` explains a FAILED or UNKNOWN status and is kept on the recipient.

    The only function that changes a recipient's status. It holds the row lock for the
    read and the write, sets the first-reached time of the new stage and of every
    earlier stage still without one, and appends exactly one StatusHistory row.
    """
    pk = recipient.pk if isinstance(recipient, BlastRecipient) else recipient
    now = timezone.now()
    when = occurred_at or now
    with transaction.atomic():
        row = BlastRecipient.objects.select_for_update().only("status", *_TIME_FIELDS).get(pk=pk)
        if not can_move(row.status, status):
            return False
        changes: dict[str, Any] = {"status": status, "status_changed_at": now}
        if reason:
            changes["failure_reason"] = reason
        if status == Status.FAILED and row.failed_at is None:
            changes["failed_at"] = when
        for stage, field in STAGE_TIME_FIELDS:
            if stage <= status and getattr(row, field) is None:
                changes[field] = when
        BlastRecipient.objects.filter(pk=pk).update(**changes)
        StatusHistory.objects.create(
            recipient_id=pk,
            from_status=row.status,
            to_status=status,
            source=source,
            occurred_at=occurred_at,
            recorded_at=now,
            actor=actor,
            raw=raw,
        )
    if isinstance(recipient, BlastRecipient):
        for name, value in changes.items():
            setattr(recipient, name, value)
    return True


@dataclass(frozen=True)
class BlastCreated:
    blast: Blast
    created: int
    duplicates: int


def blast_create(
    *,
    tag: str,
    message: str,
    recipients: ParsedRecipients,
    device: str,
    follow_up_stage: str = "Initial",
    scheduled_at: datetime | None = None,
    parent: Blast | None = None,
    created_by=None,
) -> BlastCreated:
    """Create a draft blast with its recipients (all QUEUED), or raise ValidationError and create nothing."""
    if recipients.errors:
        raise ValidationError({"recipients": recipients.errors})
    blast = Blast(
        tag=tag.strip(),
        follow_up_stage=follow_up_stage.strip(),
        message=message,
        device=device.strip(),
        scheduled_at=scheduled_at,
        parent=parent,
        created_by=created_by,
    )
    blast.full_clean()
    with transaction.atomic():
        blast.save()
        BlastRecipient.objects.bulk_create(
            (BlastRecipient(blast=blast, phone=r.phone, name=r.name) for r in recipients.recipients),
            batch_size=1000,
        )
    return BlastCreated(blast, len(recipients.recipients), recipients.duplicates)
