"""Alerts (issue 17): a blast that needs a person, a finished blast and quiet workers reach people once,
by email and by a chat webhook, and a broken alert endpoint never holds up a send."""

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from blasts import alerts
from blasts.alerts import workers_alert_quiet
from blasts.audit import Actor, Via
from blasts.gateway.client import get_client
from blasts.lifecycle import blast_pause, blast_queue, blast_start
from blasts.models import Alert, Blast, Heartbeat
from blasts.sending.worker import send_due

from .conftest import make_blast


class ChatWebhook:
    """A local stand-in for a Slack or Google Chat incoming webhook: records each POST, or hangs."""

    def __init__(self, hang: float = 0.0, status: int = 200):
        self.posts, self.hang, self.status = [], hang, status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hook.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                time.sleep(hook.hang)
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def chat(settings):
    hook = ChatWebhook()
    settings.ALERT_WEBHOOK_URL, settings.ALERT_EMAILS = hook.url, ["ops@example.com"]
    yield hook
    hook.close()


@pytest.fixture
def inline(monkeypatch):
    """Deliver on commit in this thread, so the test's transaction sees the alert."""
    monkeypatch.setattr(alerts, "deliver_in_background", alerts.alert_deliver)


def offline_gateway(settings, sandbox):
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, sandbox.url
    settings.SEND_RATE_PER_MINUTE, settings.SEND_BACKOFF_CAP_SECONDS = 0, 0.1
    with sandbox.lock:
        sandbox._faults.extend([("device_offline", "send")] * 10)


def test_a_blast_the_breaker_pauses_sends_one_email_and_one_chat_post_with_the_reason(
    db, settings, wsapme_sandbox, chat, inline, mailoutbox, django_capture_on_commit_callbacks
):
    creator = User.objects.create_user("aisyah", "aisyah@example.com", "pw", is_staff=True)
    blast = make_blast(5, device="sandbox", by=Actor(creator, Via.PAGE))
    blast_queue(blast=blast)
    offline_gateway(settings, wsapme_sandbox)
    with django_capture_on_commit_callbacks(execute=True):
        send_due(client=get_client(), blast_id=blast.pk)
        send_due(client=get_client(), blast_id=blast.pk)  # still paused: nothing more to say

    blast.refresh_from_db()
    assert blast.state == Blast.State.PAUSED and "offline" in blast.state_reason.lower()
    [email] = mailoutbox
    assert sorted(email.to) == ["aisyah@example.com", "ops@example.com"]
    assert blast.state_reason in email.body and blast.tag in email.subject
    assert [post["text"] for post in chat.posts] == [email.body]
    alert = Alert.objects.get()
    assert (alert.kind, alert.error) == (Alert.Kind.PAUSED, "") and alert.delivered_at


def test_a_person_pausing_a_blast_raises_no_alert(
    db, chat, inline, mailoutbox, django_capture_on_commit_callbacks
):
    blast = make_blast(2)
    blast_queue(blast=blast)
    blast_start(blast=blast)
    with django_capture_on_commit_callbacks(execute=True):
        blast_pause(blast=blast, by=Actor(None, Via.PAGE))
    assert not Alert.objects.exists() and mailoutbox == [] and chat.posts == []


def test_a_quiet_poller_alerts_once_for_its_silence(
    db, chat, inline, mailoutbox, django_capture_on_commit_callbacks
):
    now = timezone.now()
    Heartbeat.objects.create(name="host-a", role=Heartbeat.Role.POLLER, seen_at=now - timedelta(minutes=40))
    Heartbeat.objects.create(name="host-b", role=Heartbeat.Role.POLLER, seen_at=now - timedelta(minutes=20))
    Heartbeat.objects.create(name="host:1:", role=Heartbeat.Role.SENDER, seen_at=now)
    with django_capture_on_commit_callbacks(execute=True):
        assert workers_alert_quiet(now=now) == 1
        assert workers_alert_quiet(now=now + timedelta(seconds=5)) == 0  # the next tick: the same silence
    [post] = chat.posts
    assert post["text"] == "No status poller has been heard from for 20 minutes: is it running?"
    Heartbeat.objects.filter(name="host-b").update(seen_at=now)  # it came back …
    assert workers_alert_quiet(now=now) == 0
    Heartbeat.objects.filter(name="host-b").update(seen_at=now - timedelta(minutes=16))  # … and went again
    assert workers_alert_quiet(now=now) == 1


def test_an_undeliverable_alert_is_kept_with_why_and_the_url_is_never_shown(db, settings, inline, chat):
    settings.ALERT_WEBHOOK_URL = chat.url.replace(str(chat.server.server_address[1]), "1")  # nothing listens
    alert = Alert.objects.create(key="k", kind=Alert.Kind.COMPLETED, text="Blast “Raya” completed.")
    alerts.alert_deliver(alert.pk)
    alert.refresh_from_db()
    assert alert.delivered_at is None and alert.error == "webhook: ConnectionError"
    assert "secret" not in alert.error


@pytest.mark.django_db(transaction=True)
def test_a_slow_failing_alert_endpoint_neither_slows_nor_stops_the_sender(settings, wsapme_sandbox):
    hook = ChatWebhook(hang=3.0, status=500)
    settings.ALERT_WEBHOOK_URL = hook.url
    blast = make_blast(5, device="sandbox")
    blast_queue(blast=blast)
    offline_gateway(settings, wsapme_sandbox)
    started = time.monotonic()
    send_due(client=get_client(), blast_id=blast.pk)
    took = time.monotonic() - started

    assert Blast.objects.get(pk=blast.pk).state == Blast.State.PAUSED
    assert took < 2.5, f"the sender waited for the alert: {took:.2f} s"  # the hook alone holds 3 s
    deadline = time.monotonic() + 10
    while not Alert.objects.exclude(error="").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Alert.objects.get().error == "webhook: HTTP 500"
    hook.close()
