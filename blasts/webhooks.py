"""WSAPME callbacks: authenticate by a secret of ours, parse every known shape, store, apply, answer fast.

WSAPME offers no signature, so the operator pastes our secret into its dashboard: as a
`?token=` in the URL (or a path segment), an `X-Webhook-Token` header, or an HTTP Basic
password. Two secrets may be live at once, for rotation.
"""

import base64
import binascii
import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .recipients import normalize_phone
from .statuses import status_from_gateway
from .tracking import ReplyEvent, StatusEvent, webhook_event_receive

log = logging.getLogger(__name__)
MAX_EVENTS = 100  # events in one batched body
MAX_DEPTH = 32  # real payloads nest 4 deep; deeper is refused before anything recurses over it
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _epoch(value: Any) -> datetime | None:
    """Epoch seconds (or milliseconds), as a number or a string; None when absent or absurd."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):  # not a number, or an integer beyond float range
        return None
    if seconds > 1e11:  # milliseconds
        seconds /= 1000
    return datetime.fromtimestamp(seconds, UTC) if 946_684_800 <= seconds <= 4_102_444_800 else None


def _jid_phone(jid: Any) -> str:
    """'60113342873@c.us' or '…@s.whatsapp.net' -> '+60113342873'; '' when it is not a number."""
    if not isinstance(jid, str) or len(jid) > 64:
        return ""
    digits = jid.split("@")[0].split(":")[0]
    if not digits.isdigit():
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
        occurred_at = _epoch(body.get("messageC2STimestamp"))
    elif "from" in body and ("message" in body or "type" in body):
        phone = _jid_phone(body.get("from"))
        text = body.get("message")
        text = text if isinstance(text, str) else f"[{_scalar(body.get('type')) or 'message'}]"
        return ReplyEvent(phone, text[:4000], _epoch(body.get("timestamp"))) if phone else None
    else:
        # Flat shapes seen in WhatsApp gateways: {"messageId"|"id", "status"|"ack", "timestamp"}
        message_id = body.get("messageId", body.get("id"))
        phone, occurred_at = _jid_phone(body.get("remoteJid")), _epoch(body.get("timestamp"))
    raw_status = _scalar(body.get("status", body.get("ack")))
    if not isinstance(message_id, str) or not 0 < len(message_id) <= 64 or raw_status is None:
        return None
    return StatusEvent(message_id, status_from_gateway(raw_status), raw_status, phone, occurred_at)


def _given_secret(request, token: str | None) -> str:
    if token:
        return token
    if header := request.headers.get("X-Webhook-Token"):
        return header
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials, validate=True).decode().rpartition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return credentials  # given, but cannot match: a wrong secret
    if scheme.lower() == "bearer":
        return credentials
    return request.GET.get("token", "")


def _accepted(given: str) -> bool:
    """Constant-time compare with every live secret (no early exit, so timing tells nothing)."""
    matches = [
        hmac.compare_digest(given.encode(), secret.encode()) for secret in settings.WSAPME_WEBHOOK_SECRETS
    ]
    return any(matches)


def _error(status: int, message: str, **headers) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def _too_deep(body: Any) -> bool:
    """Whether the JSON nests deeper than MAX_DEPTH, found without recursion."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return False


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _read_json(request) -> tuple[Any, JsonResponse | None]:
    """The body as JSON, or the 4xx answer that says what is wrong with it."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    limit = settings.WEBHOOK_MAX_BYTES
    if not declared.isdigit() or int(declared) > limit:
        return None, _error(413, f"The body is over {limit} bytes.")
    if request.content_type in FORM_TYPES:
        return None, _error(415, "Send the event as JSON (Content-Type: application/json).")
    raw = request.read(limit + 1)
    if len(raw) > limit:
        return None, _error(413, f"The body is over {limit} bytes.")
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, parse_constant=_reject_constant)
        if _too_deep(body):
            raise RecursionError
        # The database stores no NUL characters, lone surrogates, or numbers beyond float
        # range (1e400 reads as inf): refuse them here rather than fail to store them.
        if "\\u0000" in text or "\x00" in text:
            raise ValueError("NUL characters are not allowed")
        json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeError:
        return None, _error(400, "The body is not UTF-8 text.")
    except RecursionError:
        return None, _error(400, "The body is nested too deeply.")
    except ValueError as exc:
        return None, _error(400, f"The body is not valid JSON: {str(exc)[:200]}")
    return body, None


@csrf_exempt  # the only CSRF-exempt view: WSAPME cannot send our CSRF token; it sends our secret
@require_POST
def wsapme_webhook(request, token: str | None = None):
    """POST /api/webhook/wsapme: status events and replies, one per body or a list of them."""
    given = _given_secret(request, token)
    if not given:
        return _error(401, "Give the webhook secret.", **{"WWW-Authenticate": 'Basic realm="wsapme-webhook"'})
    if not _accepted(given):
        return _error(403, "Wrong webhook secret.")
    body, problem = _read_json(request)
    if problem:
        return problem
    events = body if isinstance(body, list) else [body]
    if len(events) > MAX_EVENTS:
        return _error(413, f"At most {MAX_EVENTS} events in one body.")
    try:
        states = [webhook_event_receive(event, parse_event(event)).state for event in events]
    except DatabaseError:
        log.exception("webhook event could not be stored")
        return _error(503, "The event could not be stored; send it again.", **{"Retry-After": "5"})
    return JsonResponse({"received": len(states), "states": states})
