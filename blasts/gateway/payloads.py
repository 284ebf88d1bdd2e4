"""WSAPME callback bodies as events: every shape we know, parsed into dataclasses; nothing stored here."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..models import BlastRecipient
from ..recipients import normalize_phone
from ..statuses import status_from_gateway
from .client import MESSAGE_ID_MAX_LENGTH, epoch

Status = BlastRecipient.Status
REPLY_TEXT_LIMIT = 4000  # characters of a reply kept: WhatsApp's own limit is 4,096


@dataclass(frozen=True)
class StatusEvent:
    """An ack for a message we sent."""

    message_id: str
    status: Status | None  # None: a value we do not know (kept, changes nothing)
    raw_status: Any
    phone: str  # E.164 from the JID, when the shape has one
    occurred_at: datetime | None


@dataclass(frozen=True)
class ReplyEvent:
    """A message a recipient wrote to us."""

    phone: str
    text: str
    occurred_at: datetime | None


def _jid_phone(jid: Any) -> str:
    """'60113342873@c.us' or '…@s.whatsapp.net' -> '+60113342873'; '' when it is not a number."""
    if not isinstance(jid, str) or len(jid) > 64:
        return ""
    digits = jid.split("@")[0].split(":")[0]
    if not (digits.isascii() and digits.isdigit()):
        return ""
    try:
        return normalize_phone("+" + digits)
    except ValueError:
        return ""


def _scalar(value: Any) -> Any:
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def parse_event(body: Any) -> StatusEvent | ReplyEvent | None:
    """One callback body as an event; None for a shape we do not know."""
    if not isinstance(body, dict):
        return None
    key = body.get("key")
    if isinstance(key, dict) and key.get("fromMe") is not False:
        # The send answer's `data` shape: {"key": {"remoteJid", "fromMe", "id"}, "status", ...}
        message_id, phone = key.get("id"), _jid_phone(key.get("remoteJid"))
        occurred_at = epoch(body.get("messageC2STimestamp"))
    elif "from" in body and ("message" in body or "type" in body):
        phone = _jid_phone(body.get("from"))
        text = body.get("message")
        text = text if isinstance(text, str) else f"[{_scalar(body.get('type')) or 'message'}]"
        return ReplyEvent(phone, text[:REPLY_TEXT_LIMIT], epoch(body.get("timestamp"))) if phone else None
    else:
        # Flat shapes seen in WhatsApp gateways: {"messageId"|"id", "status"|"ack", "timestamp"}
        message_id = body.get("messageId", body.get("id"))
        phone, occurred_at = _jid_phone(body.get("remoteJid")), epoch(body.get("timestamp"))
    raw_status = _scalar(body.get("status", body.get("ack")))
    if (
        not isinstance(message_id, str)
        or not 0 < len(message_id) <= MESSAGE_ID_MAX_LENGTH
        or raw_status is None
    ):
        return None
    return StatusEvent(message_id, status_from_gateway(raw_status), raw_status, phone, occurred_at)
