"""Clicks on tracked links beside the funnel: how many of the sent clicked, how soon, per blast or variant.

Every count of clicks comes from here. A click (link previews left out) proves the message was
received and read; `BlastRecipient.clicked_at` is its first, set once by the redirect.
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections
from django.db.models import Count, F, Min, Q

from ..models import VARIANT_LETTERS, Blast, Link
from ..statuses import STAGE_FLOOR
from ..tracking.links import message_urls
from .funnels import audience
from .stats import Rate
from .timing import Microseconds, PercentileCont


@dataclass(frozen=True)
class Clicks:
    """Of the funnel's sent: how many clicked, the first click, and the median time from sending to clicking."""

    clicked: int = 0
    sent: int = 0
    first_click_at: datetime | None = None
    median_to_click: timedelta | None = None

    @property
    def rate(self) -> Rate:
        """Clicked as a share of sent, with its 95% interval."""
        return Rate(self.clicked, self.sent)

    def metrics(self) -> dict:
        """The API's shape: the rate as Funnel.metrics() rounds its rates."""
        return {
            "clicked": self.clicked,
            "rate": round(self.clicked / self.sent, 4) if self.sent else 0.0,
            "first_click_at": self.first_click_at,
            "median_seconds_to_click": (
                self.median_to_click.total_seconds() if self.median_to_click is not None else None
            ),
        }


def _clicks_by(recipients, group: str) -> dict:
    """Clicks of the sent among `recipients` per value of `group`, in one query (two on SQLite, which
    has no percentile function: the clicked recipients' times are read for the medians)."""
    sent = recipients.filter(status__gte=STAGE_FLOOR["sent"]).order_by()  # the funnel's sent
    postgres = connections[sent.db].vendor == "postgresql"
    aggregates = {
        "sent": Count("pk"),
        "clicked": Count("pk", filter=Q(clicked_at__isnull=False)),
        "first": Min("clicked_at"),
    }
    if postgres:  # percentile_cont skips the nulls: those not clicked, or with no send time
        aggregates["median"] = PercentileCont(Microseconds(F("clicked_at") - F("sent_at")), fraction=0.5)
    rows = sent.values(group).annotate(**aggregates)
    waits = defaultdict(list)
    if not postgres:
        clicked = sent.filter(clicked_at__isnull=False, sent_at__isnull=False)
        for value, sent_at, clicked_at in clicked.values_list(group, "sent_at", "clicked_at"):
            waits[value].append(clicked_at - sent_at)
    result = {}
    for row in rows:
        if postgres:
            median = timedelta(microseconds=row["median"]) if row["median"] is not None else None
        else:
            median = statistics.median(waits[row[group]]) if waits[row[group]] else None
        result[row[group]] = Clicks(row["clicked"], row["sent"], row["first"], median)
    return result


def blasts_clicks(blast_ids) -> dict[int, Clicks]:
    """Each blast's Clicks (none sent: zeros), for a page of blasts at once."""
    ids = list(blast_ids)
    found = _clicks_by(audience(blast_id__in=ids), "blast_id")
    return {blast_id: found.get(blast_id, Clicks()) for blast_id in ids}


def blast_clicks(blast_id: int, *, by_variant: bool = False) -> Clicks | dict[str, Clicks]:
    """The blast's Clicks; by_variant: a dict of every variant letter (A to E) to its Clicks, zeros for
    a letter nobody got, grouped as blast_variant_funnels groups (a blast without variants has none)."""
    if not by_variant:
        return blasts_clicks([blast_id])[blast_id]
    found = _clicks_by(audience(blast_id=blast_id), "variant")
    return {letter: found.get(letter, Clicks()) for letter in VARIANT_LETTERS}


def blast_tracks_links(blast: Blast) -> bool:
    """Whether the blast has clicks to show: its message (a variant's) has a link it tracks, or links
    were tracked when it was sent."""
    if (
        blast.track_links
        and settings.PUBLIC_BASE_URL
        and any(message_urls(text) for text in blast.messages.values())
    ):
        return True
    return Link.objects.filter(recipient__blast_id=blast.pk).exists()
