"""Follow-ups: a draft blast to one funnel cell of an earlier blast, on the next follow-up stage."""

import re
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

from .audit import SYSTEM, Actor
from .models import Blast, BlastRecipient
from .recipients import parse_recipients
from .services import blast_create
from .statuses import FOLLOW_UP_FROM
from .templatetags.blasts_extras import duration

Status = BlastRecipient.Status


def next_follow_up_stage(stage: str) -> str:
    """'Initial' -> 'Follow-up 1' -> 'Follow-up 2' ...; anything else gets ' follow-up' added."""
    match = re.fullmatch(r"Follow-up (\d+)", stage.strip())
    if match:
        return f"Follow-up {int(match.group(1)) + 1}"
    return "Follow-up 1" if stage.strip().lower() == "initial" else f"{stage.strip()} follow-up"[:50]


MAX_AGE_HOURS = 24 * 90  # the oldest "standing there for at least" a follow-up may ask for


def _cell_name(status: Status | str) -> str:
    return status.name if isinstance(status, Status) else status


def follow_up_audience(parent: Blast, status: Status | str, min_age: timedelta = timedelta(0)):
    """One funnel cell of the parent (a name of statuses.FOLLOW_UP_FROM, or its status): its recipients
    in the cell now, for at least `min_age` (since the cell's time: reaching the status, reading, clicking)."""
    cell = FOLLOW_UP_FROM[_cell_name(status)]
    audience = parent.recipients.filter(cell.members, is_canary=False)
    if min_age:
        audience = audience.filter(**{f"{cell.since}__lte": timezone.now() - min_age})
    return audience


def _where(status: Status | str) -> str:
    """Where a cell's recipients are, after "is" or "has been": at a status, or in a click cell."""
    name = _cell_name(status)
    if name in Status.names:
        return f"at {Status[name].label.lower()}"
    return f'in "{FOLLOW_UP_FROM[name].label.lower()}"'


def blast_create_follow_up(
    *,
    parent: Blast,
    status: Status | str,
    message: str,
    min_age: timedelta = timedelta(0),
    by: Actor = SYSTEM,
) -> Blast:
    """A draft follow-up to one funnel cell of the parent (see follow_up_audience), on the next stage."""
    audience = follow_up_audience(parent, status, min_age)
    rows = [
        (f"Recipient {pk}", phone, name) for pk, phone, name in audience.values_list("pk", "phone", "name")
    ]
    if not rows:
        at = (
            f"has been {_where(status)} for {duration(min_age)} or more"
            if min_age
            else f"is {_where(status)} now"
        )
        raise ValidationError(f"No recipient of this blast {at}.")
    return blast_create(
        tag=parent.tag,
        follow_up_stage=next_follow_up_stage(parent.follow_up_stage),
        message=message,
        recipients=parse_recipients(rows),
        device=parent.device,
        parent=parent,
        by=by,
    ).blast
