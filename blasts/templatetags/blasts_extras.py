from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    """A wait as people say it: '45 s', '3 min', '2 h 5 min', '1 d 3 h'; a dash for none."""
    if value is None:
        return "\N{EN DASH}"
    seconds = int(value.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else f"{seconds} s"


@register.filter
def percent(value: float | None) -> str:
    """A share as '12.3%'; a dash when there is none."""
    return "\N{EN DASH}" if value is None else f"{100 * value:.1f}%"


@register.filter
def interval(bounds: tuple[float, float] | None) -> str:
    """A 95% interval of shares or differences as '9.8 to 15.2'; a dash when there is none."""
    if bounds is None:
        return "\N{EN DASH}"
    low, high = (f"{100 * bound:+.1f}" if bounds[0] < 0 else f"{100 * bound:.1f}" for bound in bounds)
    return f"{low} to {high}"


@register.filter
def rate(funnel, stage: str):
    """funnel|rate:"replied": the stage's share of sent, as a Rate with its interval."""
    return funnel.rate(stage)


@register.filter
def markable(recipient, status_name: str) -> bool:
    """Whether a person may mark this sent recipient `status_name` (REPLIED or CLOSED) now: the
    status ledger's own rule, for the buttons to offer only what would change something."""
    from ..models import BlastRecipient
    from ..statuses import can_move

    Status = BlastRecipient.Status
    return recipient.status >= Status.PENDING and can_move(recipient.status, Status[status_name])


@register.filter
def state_words(blast) -> str:
    """A blast's state as people need it: a queued blast waiting for its time says when, with the day
    and the zone ("Scheduled for Tue 1 Dec, 09:00 (Kuala Lumpur)")."""
    from django.utils import timezone

    if blast.state == "queued" and blast.scheduled_at and blast.scheduled_at > timezone.now():
        return f"Scheduled for {timezone.localtime(blast.scheduled_at):%a %-d %b, %H:%M} ({zone_name()})"
    return blast.get_state_display()


@register.simple_tag
def zone_name() -> str:
    """The site's time zone as a place: "Kuala Lumpur" for Asia/Kuala_Lumpur."""
    from django.conf import settings

    return settings.TIME_ZONE.rsplit("/", 1)[-1].replace("_", " ")
