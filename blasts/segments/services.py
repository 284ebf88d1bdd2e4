"""Segments saved, deleted, and made into blasts."""

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from ..audit import Actor, Did, audit_record
from ..models import Segment
from ..recipients import parse_recipients
from ..services import BlastCreated, blast_create
from ..text import clean_text
from .rules import rules_clean, segment_members


def segment_save(*, segment: Segment, by: Actor) -> Segment:
    """Save a new or changed segment (its rules cleaned first: ValidationError names a wrong rule)."""
    segment.name = clean_text(str(segment.name)).strip()
    segment.rules = rules_clean(segment.rules)
    segment.updated_at = timezone.now()
    if segment.created_by_id is None and by.user is not None and by.user.is_authenticated:
        segment.created_by = by.user
    segment.full_clean()
    with transaction.atomic():
        segment.save()
        audit_record(
            by, Did.SEGMENT_SAVED, about=f"segment {segment}", match=segment.match, rules=segment.rules
        )
    return segment


def segment_delete(*, segment: Segment, by: Actor) -> None:
    """Delete a segment; blasts made from it keep their recipients (and forget the segment)."""
    with transaction.atomic():
        segment.delete()
        audit_record(by, Did.SEGMENT_DELETED, about=f"segment {segment}", rules=segment.rules)


def blast_create_from_segment(
    *,
    segment: Segment,
    tag: str,
    message: str,
    device: str,
    follow_up_stage: str = "Initial",
    scheduled_at: datetime | None = None,
    by: Actor,
) -> BlastCreated:
    """A draft blast to the segment's members now: a snapshot, which later changes to the segment or
    its contacts do not alter (the sender still checks opt-outs and the frequency cap at send time)."""
    members = segment_members(segment.match, segment.rules).order_by("pk").values_list("phone", "name")
    parsed = parse_recipients((f"Contact {phone}", phone, name) for phone, name in members.iterator())
    if not parsed.recipients:
        raise ValidationError(f"The segment “{segment}” has no members now: nobody to send to.")
    return blast_create(
        tag=tag,
        message=message,
        recipients=parsed,
        device=device,
        follow_up_stage=follow_up_stage,
        scheduled_at=scheduled_at,
        segment=segment,
        by=by,
    )
