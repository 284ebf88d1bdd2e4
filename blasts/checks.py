"""Settings that `manage.py check` (and so every start) refuses when they are wrong."""

from django.conf import settings
from django.core.checks import Error, register

from .recipients import normalize_phone


@register()
def canary_phones_check(app_configs, **kwargs):
    errors = []
    for raw in settings.CANARY_PHONES:
        try:
            normalize_phone(raw)
        except ValueError as exc:
            errors.append(Error(f"CANARY_PHONES: {raw!r} is {exc}.", id="blasts.E001"))
    return errors
