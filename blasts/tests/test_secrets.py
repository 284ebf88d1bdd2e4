"""No secret in logs, error pages, the admin or the API: a whole sandbox blast, an auth error included."""

import io
import logging

import pytest
from django.urls import reverse

from blasts.models import Blast, BlastRecipient, StatusHistory
from blasts.sandbox import Sandbox, SandboxConfig
from blasts.sending import send_due
from blasts.services import blast_queue
from blasts.wsapme import get_client
from blastsite import logs
from blastsite.logs import JsonFormatter, PlainFormatter

from .conftest import make_blast

TOKEN = "wsapme-token-Zq81-never-print-me"


@pytest.fixture
def captured_logs(settings):
    """Everything logged, through the app's own formatters, as an operator's log file would hold it."""
    logs._secrets.cache_clear()  # the test's settings hold other secrets than the process started with
    stream = io.StringIO()
    handlers = [logging.StreamHandler(stream), logging.StreamHandler(stream)]
    handlers[0].setFormatter(PlainFormatter())
    handlers[1].setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    yield stream
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)
    logs._secrets.cache_clear()


def test_a_whole_sandbox_blast_with_an_auth_error_shows_no_secret_anywhere(
    admin_client, settings, captured_logs
):
    sandbox = Sandbox(SandboxConfig(token=TOKEN, server_ack_after=0.05, delivered_after=0.05)).start()
    try:
        settings.WSAPME_SANDBOX, settings.WSAPME_TOKEN, settings.WSAPME_BASE_URL = False, TOKEN, sandbox.url
        settings.SEND_RATE_PER_MINUTE, settings.SEND_BACKOFF_CAP_SECONDS = 0, 0.1
        logs._secrets.cache_clear()
        blast = make_blast(4, device="sandbox")
        blast_queue(blast=blast)
        sandbox._faults.extend([("unauthorized", "send")] * 3)  # the gateway refuses our token
        send_due(client=get_client())
        blast.refresh_from_db()
        assert blast.state == Blast.State.PAUSED and "Unauthorized" in blast.state_reason
    finally:
        sandbox.stop()
    secret = settings.WSAPME_WEBHOOK_SECRETS[0]
    # Webhooks with the secret in the URL, one of them malformed (Django logs the path of a 400).
    message_id = BlastRecipient.objects.exclude(message_id=None).values_list("message_id", flat=True).first()
    status = {"data": {"message": {"id": message_id}, "status": "DELIVERY_ACK"}}
    admin_client.post(f"/api/webhook/wsapme?token={secret}", status, content_type="application/json")
    assert (
        admin_client.post(
            f"/api/webhook/wsapme/{secret}", "{bad", content_type="application/json"
        ).status_code
        == 400
    )

    recipient = blast.recipients.first()
    shown = [
        reverse("blast-list"),
        reverse("blast-detail", args=[blast.pk]),
        reverse("recipient-detail", args=[blast.pk, recipient.pk]),
        reverse("status"),
        reverse("admin:index"),
        reverse("admin:blasts_blast_change", args=[blast.pk]),
        reverse("admin:blasts_blastrecipient_changelist"),
        reverse("admin:blasts_blastrecipient_change", args=[recipient.pk]),
        reverse("admin:blasts_statushistory_changelist"),
        reverse("admin:blasts_device_changelist"),
        f"/api/blasts/{blast.pk}/",
        f"/api/blasts/{blast.pk}/recipients/?format=csv",
        f"/api/recipients/{recipient.pk}/history/",
        "/api/schema/",
        "/no-such-page/",
    ]
    secrets = [TOKEN, secret, settings.SECRET_KEY]
    for url in shown:
        response = admin_client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code in (200, 404), url
        for value in secrets:
            assert value.encode() not in body, url
    written = captured_logs.getvalue()
    assert "event" in written and "send blast=" in written  # the logs were captured
    assert "[redacted]" in written  # Django logged the 400's path, secret and all: replaced
    for value in secrets:
        assert value not in written
    assert StatusHistory.objects.filter(raw__icontains=TOKEN).count() == 0
