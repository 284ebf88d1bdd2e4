"""Settings that `manage.py check` (and so every start) refuses when they are wrong, and those
`manage.py check --deploy` warns about."""

from django.conf import settings
from django.core.checks import Error, Warning, register

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


@register(deploy=True)
def public_base_url_check(app_configs, **kwargs):
    if settings.PUBLIC_BASE_URL or settings.DEBUG:
        return []
    return [
        Warning(
            "PUBLIC_BASE_URL is empty: links go out as written, without click tracking.",
            hint="Set it to this site's address as recipients' phones reach it, e.g. https://go.example.com.",
            id="blasts.W001",
        )
    ]
