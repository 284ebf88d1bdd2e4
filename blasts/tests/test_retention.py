"""Retention: prune_records deletes old raw events and history and changes no funnel count."""

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from blasts.models import Blast, BlastRecipient, StatusHistory, WebhookEvent
from blasts.reporting.funnels import blast_funnels, blasts_daily, blasts_funnel_total
from blasts.selectors import blast_stuck

from .conftest import make_blast
from .test_follow_ups import at

Status = BlastRecipient.Status


def figures():
    blasts = Blast.objects.all()
    return (
        {pk: f.by_status for pk, f in blast_funnels(blasts.values_list("pk", flat=True)).items()},
        [[(r["status"], r["count"]) for r in blast_stuck(pk)] for pk in blasts.values_list("pk", flat=True)],
        blasts_funnel_total(blasts).stages(),
        blasts_daily(blasts),
    )


def test_pruning_deletes_old_events_and_history_and_no_funnel_count_changes(db):
    old, new = make_blast(4), make_blast(2)
    for recipient, status in zip(
        old.recipients.order_by("id"),
        [Status.READ_ACK, Status.REPLIED, Status.CLOSED, Status.SERVER_ACK],
        strict=True,
    ):
        at(recipient, status)
    for recipient in new.recipients.all():
        at(recipient, Status.DELIVERY_ACK)
    long_ago = timezone.now() - timedelta(days=200)
    StatusHistory.objects.filter(recipient__blast=old).update(recorded_at=long_ago)
    for state in (WebhookEvent.State.APPLIED, WebhookEvent.State.WAITING, WebhookEvent.State.IGNORED):
        WebhookEvent.objects.create(kind="status", state=state, received_at=long_ago, body={"x": 1})
    WebhookEvent.objects.create(kind="status", state=WebhookEvent.State.APPLIED, body={"x": 2})
    before = figures()
    kept_history = StatusHistory.objects.filter(recipient__blast=new).count()

    out = io.StringIO()
    call_command("prune_records", "--days", "90", stdout=out)

    assert out.getvalue().strip() == "2 webhook events, 8 history rows, 0 audit rows deleted"
    assert figures() == before
    assert StatusHistory.objects.count() == kept_history
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {"waiting", "applied"}  # the new one


def test_pruning_too_recent_is_refused(db):
    with pytest.raises(CommandError, match="--days must be at least 7"):
        call_command("prune_records", "--days", "1")
