"""Log lines people and machines can read, and that never carry a secret.

`log_event(logger, "send", blast=1, recipient=2, outcome="sent")` writes one line: in plain text
`send blast=1 recipient=2 outcome=sent`, or with LOG_FORMAT=json one JSON object with those
fields. Both formatters replace SECRET_KEY, the WSAPME token and the webhook secrets with
[redacted], whoever logged them (Django's request log, gunicorn's access log, a library), in every
form the webhook would accept: as is, %-encoded in a URL (any characters, either hex case, + for a
space), or as the password of HTTP Basic credentials (the whole base64 credential goes).
"""

import base64
import binascii
import json
import logging
import os
import re
from functools import cache

REDACTED = "[redacted]"


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields) -> None:
    words = " ".join(f"{key}={value}" for key, value in fields.items())
    logger.log(level, "%s %s", event, words, extra={"event": event, "fields": fields})


def _byte_pattern(byte: int) -> str:
    """One byte of a secret's UTF-8 as a request line may carry it: raw, or %xx in either hex case."""
    hex_digits = "".join(f"[{d}{d.lower()}]" if d.isalpha() else d for d in f"{byte:02X}")
    forms = ["%" + hex_digits, re.escape(chr(byte))]
    if byte >= 0x80:
        # gunicorn refuses raw non-ASCII in a request line, but its warning quotes the line with each
        # byte as a latin-1 character (which the JSON lines then escape).
        forms.append(re.escape(json.dumps(chr(byte))[1:-1]))
    return "(?:" + "|".join(forms) + ")"


def _secret_pattern(secret: str) -> str:
    """Each character as its UTF-8 bytes, each raw or %-encoded, or as itself; a space also as +; and as
    the JSON lines escape it (non-ASCII, quote, backslash). No two forms match one text, so no blow-up."""
    chars = []
    for char in secret:
        forms = ["".join(_byte_pattern(b) for b in char.encode())]
        if not char.isascii():
            forms.append(re.escape(char))
        if char == " ":
            forms.append(r"\+")
        if (escaped := json.dumps(char)[1:-1]) != char:
            forms.append(re.escape(escaped))
        chars.append("(?:" + "|".join(forms) + ")")
    return "".join(chars)


@cache
def _secrets() -> tuple[tuple[str, ...], re.Pattern]:
    """The secrets, longest first, and one pattern matching each of them in every form a request may carry it."""
    from django.conf import settings

    if settings.configured:
        values = [settings.SECRET_KEY, settings.WSAPME_TOKEN, *settings.WSAPME_WEBHOOK_SECRETS]
        values += [settings.ALERT_WEBHOOK_URL, settings.EMAIL_HOST_PASSWORD or ""]
    else:  # gunicorn's master logs before Django is set up; settings.py strips the list the same way
        values = [os.environ.get(name, "") for name in ("SECRET_KEY", "WSAPME_TOKEN", "ALERT_WEBHOOK_URL")]
        values += [s.strip() for s in os.environ.get("WSAPME_WEBHOOK_SECRETS", "").split(",")]
    # Longest first, so a secret that begins another never leaves the other's tail behind.
    secrets = tuple(sorted({v for v in values if len(v) >= 8}, key=len, reverse=True))
    return secrets, re.compile("|".join(_secret_pattern(s) for s in secrets) or "(?!)")


# `Authorization: Basic <base64 of "user:password">`; the webhook takes the password after the last colon.
BASIC = re.compile(r"(?i:basic)\s+([A-Za-z0-9+/]+={0,2})")


def _basic_redact(match: re.Match, secrets: tuple[str, ...]) -> str:
    try:
        password = base64.b64decode(match[1], validate=True).decode().rpartition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
        return match[0]  # the webhook refuses it too
    return match[0].replace(match[1], REDACTED) if password in secrets else match[0]


def redact(text: str) -> str:
    secrets, pattern = _secrets()
    if "basic" in text.lower():
        text = BASIC.sub(lambda match: _basic_redact(match, secrets), text)
    if text.isascii() and not any(mark in text for mark in "%+\\"):
        # Only the literal form can be here (the others need a %, a +, a backslash or a non-ASCII
        # character). Most lines take this path: replace costs a tenth of the pattern's search.
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        return text
    return pattern.sub(REDACTED, text)


class PlainFormatter(logging.Formatter):
    def __init__(self, fmt="%(asctime)s %(levelname)s %(name)s %(message)s", **kwargs):
        super().__init__(fmt, **kwargs)

    def format(self, record):
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the event's fields."""

    def format(self, record):
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if event := getattr(record, "event", None):
            line.update(event=event, **getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str))
