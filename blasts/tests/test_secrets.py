"""No secret in logs, error pages, the admin or the API: a whole sandbox blast, an auth error included."""

import base64
import io
import json
import logging
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st

from blasts.gateway.client import get_client
from blasts.gateway.sandbox import Sandbox
from blasts.gateway.sandbox_messages import SandboxConfig
from blasts.lifecycle import blast_queue
from blasts.models import Blast, BlastRecipient, StatusHistory
from blasts.sending.worker import send_due
from blastsite import logs
from blastsite.logs import JsonFormatter, PlainFormatter, redact

from .conftest import apply_events, make_blast
from .test_settings import GOOD_KEY, read_settings

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
    apply_events()  # what the applier logs and writes is shown and checked below too
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


# --- every form of a secret the webhook accepts is redacted -------------------------------------------

SPACED = "open sesame 2024"  # a space: + or %20 in a query string
UNICODE = "pässwört-geheim"  # not ASCII: %-encoded UTF-8 in a URL, or raw bytes gunicorn logs as latin-1
DEFAULT = "test-webhook-secret"  # pytest.ini's first


def percent(text: str, case=str.upper) -> str:
    return "".join(case(f"%{byte:02x}") for byte in text.encode())


def basic(credentials: str) -> str:
    return base64.b64encode(credentials.encode()).decode()


def form(name: str, url: str, shown: str, *, headers=None, logged_url=None):
    """A way of sending a secret: the request, and `shown`, the form its log line holds it in."""
    line = f'"POST {logged_url or url} HTTP/1.1" 200' + "".join(
        f" {k}: {v}" for k, v in (headers or {}).items()
    )
    return pytest.param(url, headers or {}, line, shown, id=name)


ACCESS = "/api/webhook/wsapme"
FORMS = [
    form("one character encoded", f"{ACCESS}?token=%74{DEFAULT[1:]}", f"%74{DEFAULT[1:]}"),
    form("all encoded, lower hex", f"{ACCESS}?token={percent(DEFAULT, str.lower)}", percent(DEFAULT, str.lower)),
    form("mixed hex case", f"{ACCESS}?token=test%2dwebhook%2Dsecret", "test%2dwebhook%2Dsecret"),
    form("path segment", f"{ACCESS}/{DEFAULT[:-1]}%74", f"{DEFAULT[:-1]}%74"),
    form("space as +", f"{ACCESS}?token=open+sesame+2024", "open+sesame+2024"),
    form("space as %20", f"{ACCESS}?token=open%20sesame%202024", "open%20sesame%202024"),
    form("UTF-8 encoded", f"{ACCESS}?token={percent(UNICODE)}", percent(UNICODE)),
    form("UTF-8 decoded", f"{ACCESS}/{UNICODE}", UNICODE),
    # Raw UTF-8 in the request line: gunicorn refuses it, and its warning quotes each byte as latin-1.
    form("UTF-8 raw", f"{ACCESS}/{UNICODE}", latin := UNICODE.encode().decode("latin-1"), logged_url=f"{ACCESS}/{latin}"),
    form("HTTP Basic", ACCESS, basic(f"wsapme:{DEFAULT}"), headers={"Authorization": f"Basic {basic('wsapme:' + DEFAULT)}"}),
    form("HTTP Basic, colon in user", ACCESS, basic(f"a:b:{SPACED}"), headers={"Authorization": f"basic {basic('a:b:' + SPACED)}"}),
]  # fmt: skip


@pytest.fixture
def more_secrets(settings):
    settings.WSAPME_WEBHOOK_SECRETS = [*settings.WSAPME_WEBHOOK_SECRETS, SPACED, UNICODE]
    logs._secrets.cache_clear()
    yield
    logs._secrets.cache_clear()


@pytest.mark.parametrize(("url", "headers", "line", "shown"), FORMS)
def test_each_form_the_webhook_accepts_is_redacted_by_both_formatters(
    client, db, more_secrets, url, headers, line, shown
):
    response = client.post(url, "{}", content_type="application/json", headers=headers)
    assert response.status_code == 200, response.content  # the webhook takes the secret in this form
    assert shown in line
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, line, None, None)
    plain = PlainFormatter().format(record)
    message = json.loads(JsonFormatter().format(record))["message"]
    for text in (plain, message):
        assert shown not in text and "[redacted]" in text, text


def ways_to_send(char: str) -> st.SearchStrategy[str]:
    """One character as a client may put it in a query string."""
    return st.sampled_from([char, percent(char), percent(char, str.lower), *["+"] * (char == " ")])


@given(data=st.data())
def test_any_mix_of_encoded_characters_is_redacted(more_secrets, data):
    for secret in (DEFAULT, SPACED, UNICODE):
        sent = "".join(data.draw(ways_to_send(char)) for char in secret)
        assert redact(f"/api/webhook/wsapme?token={sent}&x=1") == "/api/webhook/wsapme?token=[redacted]&x=1"


def test_listed_webhook_secrets_lose_the_spaces_around_them():
    result = read_settings(
        "s.WSAPME_WEBHOOK_SECRETS",
        SECRET_KEY=GOOD_KEY,
        WSAPME_WEBHOOK_SECRETS=" new-secret-1 , old-secret-2,, ",
    )
    assert json.loads(result.stdout) == ["new-secret-1", "old-secret-2"]


def test_before_django_is_set_up_the_listed_secrets_lose_their_spaces_too():
    # gunicorn's master logs before settings are read: the fallback reads the environment itself.
    environment = {**os.environ, "WSAPME_WEBHOOK_SECRETS": "new-secret-1, old-secret-2"}
    code = "from blastsite.logs import redact; print(redact('POST /api/webhook/wsapme?token=old-secret-2'))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=environment, capture_output=True, text=True
    )
    assert result.stdout == "POST /api/webhook/wsapme?token=[redacted]\n", result.stderr
