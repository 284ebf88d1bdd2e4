"""WSAPME callbacks: authenticate by a secret of ours, store the events raw, answer fast.

Applying them is the applier's job (tracking/applier.py, `manage.py apply_events`): the webhook stays
fast and up when the ledger is slow or a row is locked by a sender.

WSAPME offers no signature, so the operator pastes our secret into its dashboard: as a
`?token=` in the URL (or a path segment), an `X-Webhook-Token` header, or an HTTP Basic
password. Two secrets may be live at once, for rotation.
"""

import base64
import binascii
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .text import clean_json
from .tracking.events import webhook_events_store

log = logging.getLogger(__name__)
MAX_EVENTS = 100  # events in one batched body
MAX_DEPTH = 32  # real payloads nest 4 deep; deeper is refused before anything recurses over it
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


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


def _read_body(request, limit: int) -> bytes:
    """Up to `limit` + 1 bytes of the body: enough to tell whether it is over the limit."""
    if request.META.get("CONTENT_LENGTH") or not request.META.get("wsgi.input_terminated"):
        return request.read(limit + 1)
    # A chunked body has no Content-Length, and Django's stream then ends at 0 bytes. A server
    # that decodes the chunks says so with wsgi.input_terminated (gunicorn does) and ends the
    # input after the last one; without it, reading to the end could wait for ever.
    stream, chunks, size = request.META["wsgi.input"], [], 0
    while size <= limit and (chunk := stream.read(limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_json(request) -> tuple[Any, JsonResponse | None]:
    """The body as JSON, or the 4xx answer that says what is wrong with it."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    limit = settings.WEBHOOK_MAX_BYTES
    if not declared.isdigit() or int(declared) > limit:
        return None, _error(413, f"The body is over {limit} bytes.")
    if request.content_type in FORM_TYPES:
        return None, _error(415, "Send the event as JSON (Content-Type: application/json).")
    try:
        raw = _read_body(request, limit)
    except Exception:  # the server's own error for broken chunks (gunicorn: InvalidChunkSize, NoMoreData)
        return None, _error(400, "The body could not be read.")
    if len(raw) > limit:
        return None, _error(413, f"The body is over {limit} bytes.")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark before the JSON is allowed, and dropped
        body = json.loads(text, parse_constant=_reject_constant)
        if _too_deep(body):
            raise RecursionError
        # The database stores no number beyond float range (1e400 reads as inf): refuse it here
        # rather than fail to store it. NUL characters and lone surrogates are replaced instead:
        # they are text a person wrote, and the event must still be stored.
        json.dumps(body, allow_nan=False)
    except UnicodeError:
        return None, _error(400, "The body is not UTF-8 text.")
    except RecursionError:
        return None, _error(400, "The body is nested too deeply.")
    except ValueError as exc:
        return None, _error(400, f"The body is not valid JSON: {str(exc)[:200]}")
    return clean_json(body), None


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
        received = webhook_events_store(events)
    except DatabaseError:
        log.exception("webhook event could not be stored")
        return _error(503, "The event could not be stored; send it again.", **{"Retry-After": "5"})
    return JsonResponse({"received": received})
