"""The WSAPME gateway client: HTTP and JSON only, no ORM.

A send never raises: every answer and transport problem becomes a SendResult whose outcome
says whether the message was sent, certainly not sent (safe to retry) or maybe sent (never
resent automatically). The token never reaches a reason, an exception message or a log line.
"""

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, NewConnectionError
from urllib3.util import Retry

from ..text import clean_json, clean_text

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 3600.0
RAW_TEXT_LIMIT = 2000
# WSAPME's ids are 22 characters; a longer one cannot be stored (the column holds 64), so an answer
# with one is ambiguous, not a send we could track.
MESSAGE_ID_MAX_LENGTH = 64
REASON_LIMIT = 300


class Outcome(StrEnum):
    SENT = "sent"  # accepted: a message id is known
    REJECTED = "rejected"  # refused for this recipient, for good
    BLOCKED = "blocked"  # refused for us (token, device): not sent, retry later, trips the breaker
    NOT_SENT = "not_sent"  # certainly not sent: safe to retry
    UNKNOWN = "unknown"  # may have been sent: never resent automatically


class FailureKind(StrEnum):
    """Why a send failed, for the circuit breaker (sending.BREAKER_THRESHOLDS) and the blast's reason."""

    UNAUTHORIZED = "unauthorized"
    DEVICE_OFFLINE = "device_offline"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INVALID_NUMBER = "invalid_number"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    BAD_ANSWER = "bad_answer"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    message_id: str | None = None
    reason: str = ""  # one human line, never the token
    kind: FailureKind | str = ""  # "" when sent
    retry_after: float | None = None  # seconds, from Retry-After
    http_status: int | None = None
    raw: Any = None  # the parsed JSON answer, or the text body (truncated), or None


@dataclass(frozen=True)
class StatusResult:
    known: bool  # False when the gateway cannot say right now: not a failure of the message
    status: str | int | None  # the gateway's raw value: a name such as "READ_ACK" or a number 0-5
    occurred_at: datetime | None  # messageC2STimestamp, aware UTC
    raw: Any


class WsapmeError(Exception):
    """A transport problem or an HTTP error answer on a status check."""

    def __init__(self, message: str, *, http_status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.retry_after = retry_after


# Failures come back with HTTP 200 and success:false; the reason is the only clue. Matched
# in order on the lowercased reason: "not connected" must win over a mention of a number.
_FAILURE_REASONS: tuple[tuple[tuple[str, ...], Outcome, FailureKind], ...] = (
    (("unauthor", "forbidden", "token"), Outcome.BLOCKED, FailureKind.UNAUTHORIZED),
    (("offline", "disconnect", "not connected", "logged out"), Outcome.BLOCKED, FailureKind.DEVICE_OFFLINE),
    (("too many", "rate limit"), Outcome.NOT_SENT, FailureKind.RATE_LIMITED),
    (("number", "not registered", "invalid jid"), Outcome.REJECTED, FailureKind.INVALID_NUMBER),
)
_FAILURE_FALLBACK = (Outcome.REJECTED, FailureKind.REJECTED)

# HTTP error answers to a send. Other 4xx are rejections; other codes (5xx, and redirects,
# which are not followed because requests would turn the POST into a GET) may have sent it.
_HTTP_OUTCOMES: dict[int, tuple[Outcome, FailureKind]] = {
    401: (Outcome.BLOCKED, FailureKind.UNAUTHORIZED),
    403: (Outcome.BLOCKED, FailureKind.UNAUTHORIZED),
    408: (Outcome.NOT_SENT, FailureKind.UNAVAILABLE),  # the gateway gave up waiting for our request
    429: (Outcome.NOT_SENT, FailureKind.RATE_LIMITED),
    503: (Outcome.NOT_SENT, FailureKind.UNAVAILABLE),
}


class WsapmeClient:
    """One gateway account: a session, a token and a timeout on every call."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        session: requests.Session | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"WSAPME base URL must start with http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session = session or _pooled_session(self.base_url)

    def __repr__(self) -> str:
        return f"WsapmeClient({self.base_url!r})"

    def send(self, *, device: str, to: str, message: str) -> SendResult:
        """Send one message; every gateway answer and transport problem comes back classified."""
        try:
            response = self._post("/v1/sendMessage2", {"device": device, "to": to, "message": message})
        except requests.RequestException as exc:
            outcome, kind, reason = self._transport_failure(exc)
            result = SendResult(outcome, reason=reason, kind=kind)
        else:
            result = self._send_result(response)
        if result.outcome != Outcome.SENT:
            log.warning(
                "WSAPME send via device %s: %s (%s): %s", device, result.outcome, result.kind, result.reason
            )
        return result

    def message_status(self, *, device: str, message_id: str) -> StatusResult:
        """A message's status as the gateway knows it; raises WsapmeError on transport or HTTP errors."""
        try:
            response = self._post("/v1/getMessageStatus", {"device": device, "messageId": message_id})
        except requests.RequestException as exc:
            raise WsapmeError(f"WSAPME status check failed: {self._transport_failure(exc)[2]}") from exc
        body = _json(response)
        if not 200 <= response.status_code < 300:
            raise WsapmeError(
                f"WSAPME status check failed: {self._http_reason(response.status_code, body)}",
                http_status=response.status_code,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if not isinstance(body, dict):
            raise WsapmeError("WSAPME status check failed: the answer is not a JSON object", http_status=200)
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        # The shape is undocumented: the status has been seen at the top and under data.
        status = _first(data.get("status"), body.get("status"), data.get("ack"), body.get("ack"))
        stamp = _first(data.get("messageC2STimestamp"), body.get("messageC2STimestamp"))
        return StatusResult(
            known=body.get("success", True) is not False and status is not None,
            status=status,
            occurred_at=epoch(stamp),
            raw=body,
        )

    def _post(self, path: str, payload: dict) -> requests.Response:
        return self._session.post(
            f"{self.base_url}{path}",
            json=payload,
            headers={"x-wsapme-token": self._token},
            timeout=(self.connect_timeout, self.read_timeout),
            allow_redirects=False,
        )

    def _send_result(self, response: requests.Response) -> SendResult:
        code, body = response.status_code, _json(response)
        common = {
            "http_status": code,
            "raw": body if body is not None else clean_text(response.text[:RAW_TEXT_LIMIT]),
            "retry_after": _retry_after(response.headers.get("Retry-After")),
        }
        if not 200 <= code < 300:
            outcome, kind = _HTTP_OUTCOMES.get(code) or (
                _FAILURE_FALLBACK if 400 <= code < 500 else (Outcome.UNKNOWN, FailureKind.BAD_ANSWER)
            )
            return SendResult(outcome, reason=self._http_reason(code, body), kind=kind, **common)
        if not isinstance(body, dict):
            return SendResult(
                Outcome.UNKNOWN, reason="answer is not a JSON object", kind=FailureKind.BAD_ANSWER, **common
            )
        message_id = _message_id(body)
        success = body.get("success", True)  # the older flat /v1/sendMessage answer has no success key
        if success is True and message_id:
            return SendResult(Outcome.SENT, message_id=message_id, **common)
        if success is False and not message_id:
            reason = self._line(_gateway_message(body) or "success:false without a reason")
            outcome, kind = next(
                ((o, k) for words, o, k in _FAILURE_REASONS if any(w in reason.lower() for w in words)),
                _FAILURE_FALLBACK,
            )
            return SendResult(outcome, reason=reason, kind=kind, **common)
        # No id, an id with success:false, or success neither true nor false: it may be sent.
        reason = self._line(f"ambiguous answer: success={success!r}, messageId={message_id!r}")
        return SendResult(
            Outcome.UNKNOWN, message_id=message_id, reason=reason, kind=FailureKind.BAD_ANSWER, **common
        )

    def _transport_failure(self, exc: requests.RequestException) -> tuple[Outcome, FailureKind, str]:
        """Outcome, kind and reason: only a failed connect proves the request was never written."""
        if isinstance(exc, requests.ConnectTimeout):
            return (
                Outcome.NOT_SENT,
                FailureKind.UNAVAILABLE,
                f"connect timed out after {self.connect_timeout:g}s",
            )
        if isinstance(exc, requests.ConnectionError) and any(
            isinstance(e, NewConnectionError) for e in _chain(exc)
        ):
            return Outcome.NOT_SENT, FailureKind.UNAVAILABLE, "could not connect (refused or no such host)"
        if isinstance(exc, requests.ReadTimeout):
            return Outcome.UNKNOWN, FailureKind.TIMEOUT, f"read timed out after {self.read_timeout:g}s"
        return (
            Outcome.UNKNOWN,
            FailureKind.BAD_ANSWER,
            f"no complete answer: {type(_chain(exc)[-1]).__name__}",
        )

    def _http_reason(self, code: int, body: Any) -> str:
        message = _gateway_message(body) if isinstance(body, dict) else ""
        return self._line(f"HTTP {code}: {message}" if message else f"HTTP {code}")

    def _line(self, text: str) -> str:
        """One short line, with the token blanked out in case the gateway echoes it."""
        line = " ".join(text.split())[:REASON_LIMIT]
        return line.replace(self._token, "***") if self._token else line


# Connections kept open for reuse. urllib3 keeps 10 by default; the senders and pollers share one
# client across their threads, and each thread beyond the 10th would open (and drop) a
# connection per call. A pool only holds connections that were opened, so a roomy one is free.
POOL_SIZE = 64


def _pooled_session(base_url: str) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # requests reads the proxy and CA-bundle variables from the environment again on every call
    # (a quarter of a send's CPU in the client, bench/overhead.py); they do not change while we
    # run, so they are read once, here.
    session.proxies = requests.utils.get_environ_proxies(base_url)
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.trust_env = False
    return session


def get_client() -> WsapmeClient:
    """The client for the configured gateway: the real one with WSAPME_TOKEN, else the local sandbox."""
    sandbox = getattr(settings, "WSAPME_SANDBOX", False)
    token = settings.WSAPME_SANDBOX_TOKEN if sandbox else settings.WSAPME_TOKEN
    if not settings.WSAPME_BASE_URL or not token:
        raise ImproperlyConfigured("WSAPME_BASE_URL and WSAPME_TOKEN must be set outside sandbox mode")
    return WsapmeClient(
        settings.WSAPME_BASE_URL,
        token,
        connect_timeout=float(getattr(settings, "WSAPME_CONNECT_TIMEOUT", 5)),
        read_timeout=float(getattr(settings, "WSAPME_READ_TIMEOUT", 20)),
    )


def _json(response: requests.Response) -> Any:
    """The answer as JSON (storable: no NUL, no lone surrogate), or None."""
    try:
        return clean_json(response.json())
    except ValueError:  # requests' JSONDecodeError is a ValueError
        return None


def _message_id(body: dict) -> str | None:
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    key = data.get("key") if isinstance(data.get("key"), dict) else {}
    found = _first(body.get("messageId"), key.get("id"), data.get("messageId"))
    return str(found) if found is not None and 0 < len(str(found)) <= MESSAGE_ID_MAX_LENGTH else None


def _gateway_message(body: dict) -> str:
    return str(_first(body.get("message"), body.get("error")) or "")


def _first(*values: Any) -> str | int | None:
    """The first value that is a non-empty string or an int (bool is an int, but not a value)."""
    for value in values:
        if (isinstance(value, str) and value.strip()) or (
            isinstance(value, int) and not isinstance(value, bool)
        ):
            return value
    return None


def epoch(value: Any) -> datetime | None:
    """A gateway time: epoch seconds (or milliseconds), a number or a string; None when absent or absurd."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):  # not a number, or an integer beyond float range
        return None
    if seconds > 1e11:  # milliseconds
        seconds /= 1000
    return datetime.fromtimestamp(seconds, UTC) if 946_684_800 <= seconds <= 4_102_444_800 else None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP-date), capped at an hour.

    urllib3 parses it as RFC 9110 says; a value that is neither (a fraction, a negative number,
    a word) is no Retry-After at all.
    """
    if not value:
        return None
    try:
        return min(Retry().parse_retry_after(value), MAX_RETRY_AFTER)
    except InvalidHeader:
        return None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps: causes, contexts, and urllib3's args and .reason."""
    found: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        wrapped = (current.__cause__, current.__context__, getattr(current, "reason", None), *current.args)
        todo.extend(e for e in wrapped if isinstance(e, BaseException))
    return found
