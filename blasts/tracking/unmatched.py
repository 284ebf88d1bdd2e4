"""Sends whose outcome is unknown and acks that wait for a message id: what an operator can match by hand.

Flat acks ({"messageId", "status"}) name no number, so an ack for a send whose answer we never got
cannot be matched by rule (tracking._unknown_send_for needs the number). These reads show both
sides, so a person can match them (tracking.recipient_match_message_id).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Max, Min, Q

from ..models import Blast, BlastRecipient, WebhookEvent
from .events import WAITING_KEPT

Status = BlastRecipient.Status
MATCH_CHOICES = 20  # waiting messages offered for one send, the nearest in time first


@dataclass(frozen=True)
class WaitingMessage:
    """The acks waiting under one message id."""

    message_id: str
    acks: int
    first_at: datetime
    last_at: datetime
    statuses: str  # as the gateway wrote them, e.g. "SERVER_ACK, READ"


def _window() -> timedelta:
    return timedelta(minutes=settings.UNKNOWN_MATCH_MINUTES)


def _waiting_acks(since: datetime, until: datetime, phone: str = ""):
    return WebhookEvent.objects.filter(
        kind=WebhookEvent.Kind.STATUS,
        state=WebhookEvent.State.WAITING,
        received_at__range=(since, until),
    ).filter(Q(phone="") | Q(phone=phone) if phone else Q())


def blast_unmatched(blast: Blast) -> tuple[int, int]:
    """(sends of the blast with an unknown outcome and no message id, message ids with acks waiting since then)."""
    unknown = blast.recipients.filter(status=Status.UNKNOWN, message_id__isnull=True).aggregate(
        count=Count("pk"), since=Min("status_changed_at"), until=Max("status_changed_at")
    )
    if not unknown["count"]:
        return 0, 0
    waiting = _waiting_acks(unknown["since"] - _window(), unknown["until"] + WAITING_KEPT)
    return unknown["count"], waiting.values("message_id").distinct().count()


def recipient_send_started(recipient: BlastRecipient) -> datetime | None:
    """When the recipient's last send began (its last move to SENDING)."""
    return (
        recipient.history.filter(to_status=Status.SENDING)
        .order_by("-recorded_at")
        .values_list("recorded_at", flat=True)
        .first()
    )


def recipient_match_choices(recipient: BlastRecipient) -> list[WaitingMessage]:
    """Messages with acks waiting that may be this send's, nearest in time first; none once it has an id."""
    sent = recipient.status == Status.UNKNOWN or recipient.status >= Status.PENDING
    started = recipient_send_started(recipient) if sent and not recipient.message_id else None
    if started is None:
        return []
    acks = _waiting_acks(started - _window(), started + WAITING_KEPT, recipient.phone)
    found: dict[str, list] = {}
    for message_id, status, received_at in acks.order_by("received_at").values_list(
        "message_id", "status", "received_at"
    )[:2000]:
        found.setdefault(message_id, []).append((status, received_at))
    messages = [
        WaitingMessage(
            message_id,
            acks=len(rows),
            first_at=rows[0][1],
            last_at=rows[-1][1],
            statuses=", ".join(dict.fromkeys(status for status, _ in rows)),
        )
        for message_id, rows in found.items()
    ]
    return sorted(messages, key=lambda m: abs(m.first_at - started))[:MATCH_CHOICES]
