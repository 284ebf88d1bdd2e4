"""Rules no test pinned before (issue 16): each of these failed to fail when the rule was broken."""

import hmac
import random
from unittest import mock

import pytest
from django.test import Client
from django.urls import reverse

from blasts.models import Blast, BlastRecipient, StatusHistory
from blasts.selectors import blasts_daily
from blasts.sending import _backoff
from blasts.services import recipient_advance

from .conftest import make_blast

Status = BlastRecipient.Status


def at(blast: Blast, *statuses: Status) -> list[BlastRecipient]:
    """The blast's recipients moved (sent first) to `statuses`, in order."""
    recipients = list(blast.recipients.order_by("id"))
    for recipient, status in zip(recipients, statuses, strict=True):
        recipient_advance(recipient=recipient, status=Status.PENDING, source=StatusHistory.Source.SEND)
        if status != Status.PENDING:
            recipient_advance(recipient=recipient, status=status, source=StatusHistory.Source.WEBHOOK)
    return recipients


def test_server_ack_is_not_received_in_the_recipients_filter(admin_client):
    blast = make_blast(3)
    _, delivered, read = at(blast, Status.SERVER_ACK, Status.DELIVERY_ACK, Status.READ_ACK)
    url = reverse("api:blast-recipients", args=[blast.pk])

    phones = {r["phone"] for r in admin_client.get(url, {"stage": "received"}).json()["results"]}

    assert phones == {delivered.phone, read.phone}


def test_server_ack_is_not_received_in_the_daily_trend(db):
    blast = make_blast(3)
    at(blast, Status.SERVER_ACK, Status.DELIVERY_ACK, Status.READ_ACK)

    (day,) = blasts_daily(Blast.objects.filter(pk=blast.pk))

    assert (day["sent"], day["received"], day["read"]) == (3, 2, 1)


def test_a_later_reply_keeps_the_first_replys_words(db):
    recipient = make_blast(1).recipients.get()
    at(recipient.blast, Status.PENDING)
    jid = recipient.phone.lstrip("+") + "@c.us"
    for text in ("First answer", "Second answer"):
        body = {"type": "text", "from": jid, "message": text}
        Client().post("/api/webhook/wsapme", body, content_type="application/json",
                      headers={"X-Webhook-Token": "test-webhook-secret"})  # fmt: skip
    recipient.refresh_from_db()
    assert (recipient.status, recipient.reply_text) == (Status.REPLIED, "First answer")


@pytest.mark.parametrize("attempts", [1, 3, 8])
def test_the_backoff_never_comes_before_the_gateways_retry_after(settings, attempts):
    settings.SEND_BACKOFF_CAP_SECONDS = 300
    rng = random.Random(7)
    assert all(_backoff(attempts, 600.0, rng) >= 600.0 for _ in range(50))
    assert all(_backoff(attempts, None, rng) <= 450.0 for _ in range(50))  # capped, with jitter


def test_the_webhook_secret_is_compared_in_constant_time_with_every_live_secret(db):
    with mock.patch("blasts.webhooks.hmac.compare_digest", wraps=hmac.compare_digest) as compare:
        response = Client().post("/api/webhook/wsapme", {}, content_type="application/json",
                                 headers={"X-Webhook-Token": "test-webhook-secret-next"})  # fmt: skip
    assert response.status_code == 200
    assert compare.call_count == 2  # both live secrets, no early exit
