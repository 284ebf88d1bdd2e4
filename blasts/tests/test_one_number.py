"""One definition per number (issue 18, item 6): a blast with every status and the awkward
transitions, counted by every place that shows a count: they must all agree."""

import csv
import io
from collections import Counter

from django.urls import reverse

from blasts.models import Blast, BlastRecipient, StatusHistory
from blasts.reporting.funnels import blast_funnel, blasts_daily, blasts_funnel_breakdown, blasts_funnel_total
from blasts.services import recipient_advance

from .conftest import make_blast

Status = BlastRecipient.Status
SEND, HOOK = StatusHistory.Source.SEND, StatusHistory.Source.WEBHOOK

# Each recipient's path from QUEUED, the way the sender and the gateway would move it.
PATHS = [
    [],  # still queued
    [Status.SENDING],  # in flight
    [Status.SENDING, Status.PENDING],
    [Status.SENDING, Status.PENDING, Status.SERVER_ACK],
    [Status.SENDING, Status.PENDING, Status.DELIVERY_ACK],
    [Status.SENDING, Status.PENDING, Status.READ_ACK],
    [Status.SENDING, Status.PENDING, Status.REPLIED],  # a reply with read receipts off
    [Status.SENDING, Status.PENDING, Status.READ_ACK, Status.REPLIED, Status.CLOSED],
    [Status.SENDING, Status.PENDING, Status.FAILED],  # accepted, then WhatsApp said ERROR
    [Status.SENDING, Status.PENDING, Status.DELIVERY_ACK, Status.FAILED],  # ERROR after delivery: ignored
    [Status.SENDING, Status.FAILED],  # refused at the send
    [Status.SENDING, Status.UNKNOWN],  # the answer was lost
    [Status.SKIPPED],  # opted out
]
EXPECTED = {
    "sent": 7, "received": 5, "read": 3, "replied": 2, "closed": 1,
    "failed": 2, "unknown": 1, "skipped": 1, "not_sent": 2,
}  # fmt: skip


def every_status_blast() -> Blast:
    blast = make_blast(len(PATHS) + 1, tag="Every status")
    recipients = list(blast.recipients.order_by("id"))
    BlastRecipient.objects.filter(pk=recipients[-1].pk).update(is_canary=True, status=Status.READ_ACK)
    for recipient, path in zip(recipients, PATHS, strict=False):
        for status in path:
            recipient_advance(recipient=recipient, status=status, source=SEND if status < 20 else HOOK)
    return blast


def test_every_place_that_counts_a_stage_agrees(admin_client):
    blast = every_status_blast()
    blasts = Blast.objects.filter(pk=blast.pk)
    funnel = blast_funnel(blast.pk)
    places = {
        "blast page": {**funnel.stages(), "failed": funnel.failed, "unknown": funnel.unknown,
                       "skipped": funnel.skipped, "not_sent": funnel.not_sent},
        "list page totals": blasts_funnel_total(blasts).stages(),
        "overview": blasts_funnel_breakdown(blasts).total.stages(),
    }  # fmt: skip
    metrics = admin_client.get(f"/api/blasts/{blast.pk}/metrics").json()
    places["api metrics"] = {
        **{k: metrics[k] for k in EXPECTED if k != "not_sent"},
        "not_sent": metrics["queued"],
    }
    listed = admin_client.get("/api/blasts").json()["results"][0]["metrics"]
    places["api list"] = {k: listed[k] for k in ("sent", "received", "read", "replied", "closed")}
    days = blasts_daily(blasts)
    places["daily trend"] = {
        stage: sum(day[stage] for day in days) for stage in ("sent", "received", "read", "replied")
    }
    rows = list(csv.DictReader(io.StringIO(b"".join(
        admin_client.get(reverse("blast-recipients-csv", args=[blast.pk])).streaming_content).decode())))  # fmt: skip
    by_status = Counter(row["status_code"] for row in rows)
    places["csv"] = {
        "failed": by_status["FAILED"],
        "unknown": by_status["UNKNOWN"],
        "skipped": by_status["SKIPPED"],
    }
    stuck = {
        row["status"]: row["count"]
        for row in admin_client.get(f"/api/blasts/{blast.pk}/stuck-recipients").json()
    }
    places["stuck"] = {"not_sent": stuck["QUEUED"] + stuck["SENDING"], "closed": stuck["CLOSED"]}

    disagree = {
        place: {name: (count, EXPECTED[name]) for name, count in counts.items() if count != EXPECTED[name]}
        for place, counts in places.items()
    }
    assert {place: d for place, d in disagree.items() if d} == {}
