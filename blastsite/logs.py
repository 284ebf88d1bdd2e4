"""Log lines people and machines can read, and that never carry a secret.

`log_event(logger, "send", blast=1, recipient=2, outcome="sent")` writes one line: in plain text
`send blast=1 recipient=2 outcome=sent`, or with LOG_FORMAT=json one JSON object with those
fields. Both formatters replace SECRET_KEY, the WSAPME token and the webhook secrets with
[redacted], whoever logged them (Django's request log, gunicorn's access log, a library).
"""

import json
import logging
import os
from functools import cache

REDACTED = "[redacted]"


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields) -> None:
    words = " ".join(f"{key}={value}" for key, value in fields.items())
    logger.log(level, "%s %s", event, words, extra={"event": event, "fields": fields})


@cache
def _secrets() -> tuple[str, ...]:
    from django.conf import settings

    if settings.configured:
        values = [settings.SECRET_KEY, settings.WSAPME_TOKEN, *settings.WSAPME_WEBHOOK_SECRETS]
    else:  # gunicorn's master logs before Django is set up
        values = [os.environ.get("SECRET_KEY", ""), os.environ.get("WSAPME_TOKEN", "")]
        values += os.environ.get("WSAPME_WEBHOOK_SECRETS", "").split(",")
    return tuple(sorted({v for v in values if len(v) >= 8}, key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _secrets():
        text = text.replace(secret, REDACTED)
    return text


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
