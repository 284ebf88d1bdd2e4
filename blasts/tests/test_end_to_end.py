"""The whole path against the sandbox gateway, a live server and the applier: send, receive webhooks,
apply them, replay them."""

import json
import time

import pytest
from django.test import Client

from blasts.gateway.client import get_client
from blasts.lifecycle import blast_queue
from blasts.models import BlastRecipient, OptOut, StatusHistory, WebhookEvent
from blasts.reporting.funnels import blast_funnel
from blasts.sending.worker import send_due

from .conftest import make_blast

Status = BlastRecipient.Status
LADDER = {"ERROR": Status.FAILED, "SERVER_ACK": Status.SERVER_ACK, "DELIVERY_ACK": Status.DELIVERY_ACK}
LADDER["READ_ACK"] = Status.READ_ACK


def settle(sandbox, timeout=30.0):
    """Wait until the sandbox has posted every webhook it scheduled."""
    deadline, seen, quiet_since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        with sandbox.lock:
            pending, delivered = len(sandbox._events), len(sandbox.deliveries)
        if delivered != seen:
            seen, quiet_since = delivered, time.monotonic()
        elif not pending and time.monotonic() - quiet_since > 0.5:
            return
        time.sleep(0.05)
    raise AssertionError("the sandbox kept posting webhooks")


def applied(timeout=30.0):
    """Wait until the applier has applied every webhook event stored so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not WebhookEvent.objects.filter(state=WebhookEvent.State.RECEIVED).exists():
            return
        time.sleep(0.05)
    raise AssertionError("the applier left webhook events unapplied")


def expected_status(message):
    """Where the sandbox's own timeline says the recipient must end."""
    if message.reply:
        return Status.REPLIED
    return max(LADDER[name] for _, name in message.timeline) if message.timeline else Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_a_blast_ends_where_the_gateway_says_and_replaying_its_webhooks_changes_nothing(
    live_server, wsapme_sandbox, settings, applier
):
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, wsapme_sandbox.url
    settings.SEND_RATE_PER_MINUTE = 0
    wsapme_sandbox.config.update(
        {
            "webhook_url": f"{live_server.url}/api/webhook/wsapme?token=test-webhook-secret",
            "seed": 11,
            "p_error": 0.1,
            "p_delivered": 0.85,
            "p_read": 0.8,
            "p_receipts_off": 0.2,
            "p_reply": 0.5,
            "p_opt_out": 0.2,
            "p_duplicate": 0.3,
            "shuffle_window": 0.2,
            "p_early_ack": 0.3,
        }
    )
    blast = make_blast(40, device="sandbox")
    blast_queue(blast=blast)

    assert send_due(client=get_client(), blast_id=blast.pk)["sent"] == 40
    settle(wsapme_sandbox)
    applied()

    assert {d.get("http_status") for d in wsapme_sandbox.deliveries} == {200}
    assert WebhookEvent.objects.count() == len(wsapme_sandbox.deliveries)
    by_id = {m.id: m for m in wsapme_sandbox.messages.values()}
    ended = dict(blast.recipients.values_list("message_id", "status"))
    assert ended == {message_id: expected_status(by_id[message_id]) for message_id in ended}
    funnel = blast_funnel(blast.pk)
    assert funnel.sent == 40 - funnel.failed and funnel.replied > 0 and funnel.read > funnel.replied
    opt_outs = {
        m.phone for m in by_id.values() if m.reply and m.reply[1] in ("STOP", "BERHENTI", "unsubscribe")
    }
    assert {p.lstrip("+") for p in OptOut.objects.values_list("phone", flat=True)} == opt_outs
    assert not WebhookEvent.objects.filter(
        state=WebhookEvent.State.WAITING
    ).exists()  # early acks all applied

    # Replay the whole webhook log: not one recipient, count or history row changes.
    history = StatusHistory.objects.count()
    client = Client()
    for delivery in wsapme_sandbox.deliveries:
        response = client.post(
            "/api/webhook/wsapme?token=test-webhook-secret",
            data=json.dumps(delivery["payload"]),
            content_type="application/json",
        )
        assert response.status_code == 200
    applied()
    assert dict(blast.recipients.values_list("message_id", "status")) == ended
    assert blast_funnel(blast.pk) == funnel
    assert StatusHistory.objects.count() == history
