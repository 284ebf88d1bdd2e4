"""The gateway's status vocabulary and the forward-only rule of the status ledger.

Payloads may carry WhatsApp Web's names or its numbers (ERROR=0 ... PLAYED=5); WSAPME
writes read as READ_ACK. REPLIED and CLOSED are ours (a reply arrives, a sale is made).
"""

import logging
from typing import NamedTuple

from django.db.models import Q

from .models import Blast, BlastRecipient

Status = BlastRecipient.Status
BlastState = Blast.State
log = logging.getLogger(__name__)

GATEWAY_STATUSES: dict[str, Status] = {
    "ERROR": Status.FAILED,
    "0": Status.FAILED,
    "PENDING": Status.PENDING,
    "1": Status.PENDING,
    "SERVER_ACK": Status.SERVER_ACK,
    "2": Status.SERVER_ACK,
    "DELIVERY_ACK": Status.DELIVERY_ACK,
    "3": Status.DELIVERY_ACK,
    "READ": Status.READ_ACK,
    "READ_ACK": Status.READ_ACK,
    "4": Status.READ_ACK,
    # A played voice or video message was at least read; text blasts rarely see it.
    "PLAYED": Status.READ_ACK,
    "5": Status.READ_ACK,
    "REPLIED": Status.REPLIED,
    "CLOSED": Status.CLOSED,
}


def status_from_gateway(value: object) -> Status | None:
    """Map a gateway status (name or number, any case) to ours; None for a value we do not know."""
    if isinstance(value, bool):  # bool is an int: True would read as "1"
        value = None
    status = GATEWAY_STATUSES.get(str(value).strip().upper())
    if status is None:
        log.warning("unknown gateway status %r ignored", str(value)[:40])
    return status


# Statuses off the ladder, and the statuses each may be entered from.
_ENTERED_FROM: dict[Status, frozenset[Status]] = {
    # Back to the queue: a send the gateway did not take, or an operator's resend of an unknown one.
    Status.QUEUED: frozenset({Status.SENDING, Status.UNKNOWN}),
    Status.SENDING: frozenset({Status.QUEUED}),
    Status.UNKNOWN: frozenset({Status.SENDING}),
    Status.SKIPPED: frozenset({Status.QUEUED}),
    # ERROR after DELIVERY_ACK is ignored: the phone had the message, so the
    # error cannot undo that, and the funnel never loses a received recipient.
    Status.FAILED: frozenset(
        {Status.QUEUED, Status.SENDING, Status.UNKNOWN, Status.PENDING, Status.SERVER_ACK}
    ),
}


def can_move(current: int, new: int) -> bool:
    """Whether the ledger applies `new` to a recipient now at `current`.

    On the ladder (PENDING and up) a status only moves to a greater one. A FAILED
    recipient moves again only on proof of delivery (DELIVERY_ACK or later), so the
    final status never depends on the order in which an ERROR and the acks arrive.
    A SKIPPED recipient was never sent and stays skipped.
    """
    if new >= Status.PENDING:
        if current == Status.SKIPPED:
            return False
        if current == Status.FAILED:
            return new >= Status.DELIVERY_ACK
        return current < new
    return current in _ENTERED_FROM.get(new, ())


# The time field each ladder stage sets the first time it (or a later stage) is reached.
STAGE_TIME_FIELDS: tuple[tuple[Status, str], ...] = (
    (Status.PENDING, "sent_at"),
    (Status.SERVER_ACK, "server_ack_at"),
    (Status.DELIVERY_ACK, "delivered_at"),
    (Status.READ_ACK, "read_at"),
    (Status.REPLIED, "replied_at"),
    (Status.CLOSED, "closed_at"),
)

# The funnel's stages and the lowest status that has reached each: a recipient reached a stage when its
# status is at least this (the ladder's order; CLOSED is its top).
STAGE_FLOOR: dict[str, Status] = {
    "sent": Status.PENDING,
    "received": Status.DELIVERY_ACK,
    "read": Status.READ_ACK,
    "replied": Status.REPLIED,
    "closed": Status.CLOSED,
}

# Funnel order of the statuses a recipient can be stuck at (its current status).
FUNNEL_ORDER: tuple[Status, ...] = (
    Status.QUEUED,
    Status.SENDING,
    Status.PENDING,
    Status.SERVER_ACK,
    Status.DELIVERY_ACK,
    Status.READ_ACK,
    Status.REPLIED,
    Status.CLOSED,
)


class FollowUpCell(NamedTuple):
    label: str
    members: Q  # who is in the cell now (the canaries are left out apart)
    since: str  # the time field a follow-up's "for at least" is measured from


# The funnel cells a follow-up can be made for, by name: people who got the message and have not
# replied. A status's name is the recipients standing at it; the two click cells cut across statuses.
# A click proves reading, so the redirect moves a clicker to READ_ACK (a FAILED one too); one whose
# click came before its send was recorded is still sending, off the ladder, and in no cell yet.
FOLLOW_UP_FROM: dict[str, FollowUpCell] = {
    "PENDING": FollowUpCell(
        "Sent, not yet at WhatsApp's server", Q(status=Status.PENDING), "status_changed_at"
    ),
    "SERVER_ACK": FollowUpCell(
        "At WhatsApp's server, not delivered", Q(status=Status.SERVER_ACK), "status_changed_at"
    ),
    "DELIVERY_ACK": FollowUpCell("Delivered, not read", Q(status=Status.DELIVERY_ACK), "status_changed_at"),
    "READ_ACK": FollowUpCell("Read, not replied", Q(status=Status.READ_ACK), "status_changed_at"),
    "READ_NOT_CLICKED": FollowUpCell(
        "Read, not clicked",
        Q(status__gte=Status.READ_ACK, status__lt=Status.REPLIED, clicked_at__isnull=True),
        "read_at",
    ),
    "CLICKED_NOT_REPLIED": FollowUpCell(
        "Clicked, not replied",
        Q(status__gte=Status.PENDING, status__lt=Status.REPLIED, clicked_at__isnull=False),
        "clicked_at",
    ),
}


# --- blasts ---------------------------------------------------------------------------------------

# Where a blast may go from each state. services.blast_move is the only writer of Blast.state and
# refuses any other move.
BLAST_MOVES: dict[BlastState, frozenset[BlastState]] = {
    BlastState.DRAFT: frozenset({BlastState.QUEUED, BlastState.CANCELLED}),
    BlastState.QUEUED: frozenset(
        {BlastState.SENDING, BlastState.PAUSED, BlastState.CANCELLED, BlastState.COMPLETED}
    ),
    BlastState.SENDING: frozenset({BlastState.PAUSED, BlastState.CANCELLED, BlastState.COMPLETED}),
    BlastState.PAUSED: frozenset({BlastState.QUEUED, BlastState.CANCELLED}),
    BlastState.COMPLETED: frozenset({BlastState.QUEUED}),  # an operator resends the unknown sends
    BlastState.CANCELLED: frozenset(),
}
# The senders send it (at its scheduled time).
ACTIVE: tuple[BlastState, ...] = (BlastState.QUEUED, BlastState.SENDING)
# Not ended: it may still send.
OPEN: tuple[BlastState, ...] = (BlastState.DRAFT, *ACTIVE, BlastState.PAUSED)
