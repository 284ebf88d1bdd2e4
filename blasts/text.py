"""Text from outside (the gateway, its users) made storable: every rule about it in one place.

PostgreSQL enforces what SQLite ignores: a varchar's length, and no NUL character in text or
jsonb. A lone surrogate cannot be encoded to UTF-8 at all. So outside text is cleaned once when
it arrives (clean_json) and cut to its column after any formatting that may grow it (fit).
"""

import re
from typing import Any

from django.db import models

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with NUL characters and lone surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def clean_json(value: Any) -> Any:
    """A parsed JSON value with clean_text applied to every string in it, keys included."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_json(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(key): clean_json(item) for key, item in value.items()}
    return value


def fit(model: type[models.Model], field: str, text: str) -> str:
    """`text` cut to the column's max_length (ending in '…' when cut); the column is the one definition."""
    limit = model._meta.get_field(field).max_length
    return text if len(text) <= limit else text[: limit - 1] + "…"
