"""The delivery-health breaker: when recent sends are not delivered in time, or come back ERROR, the
blast pauses and says why; a healthy blast is left alone, and a resumed one is judged afresh."""

from datetime import UTC, datetime, timedelta

import pytest
import requests
from django.utils import timezone

from blasts.gateway.client import get_client
from blasts.gateway.sandbox import Sandbox
from blasts.gateway.sandbox_messages import SandboxConfig
from blasts.lifecycle import blast_queue, blast_resume
from blasts.models import Blast, BlastRecipient
from blasts.sending import health
from blasts.sending.health import (
    DeliveryHealth,
    blast_check_delivery_health,
    blast_delivery_health,
    delivery_health_problem,
)
from blasts.sending.worker import send_due

from .conftest import make_blast

Status = BlastRecipient.Status
NOW = datetime(2026, 1, 18, 12, 0, tzinfo=UTC)
WAIT = timedelta(minutes=10)
RULES = {"min_sample": 20, "min_rate": 0.5, "max_error_rate": 0.2, "wait": WAIT}
BANNED = (
    "Only 4 of the last 30 messages were delivered within 10 min (threshold 50%); 24 stopped at server "
    "ack, never delivered; 2 came back ERROR. The number may be banned or its messages silently dropped. "
    "Check the number, then resume."
)


def set_sends(blast, rows, *, now=NOW):
    """Give the blast's recipients, in id order, fixed outcomes: (status, sent minutes before `now` or
    None for never sent, delivered minutes after sending or None)."""
    for recipient, (status, sent_ago, delivered_after) in zip(
        blast.recipients.order_by("id"), rows, strict=True
    ):
        sent_at = None if sent_ago is None else now - timedelta(minutes=sent_ago)
        delivered_at = None if delivered_after is None else sent_at + timedelta(minutes=delivered_after)
        BlastRecipient.objects.filter(pk=recipient.pk).update(
            status=status, sent_at=sent_at, delivered_at=delivered_at
        )


def banned_blast(*, started_ago=timedelta(hours=2), queued=0):
    """A blast sending for a while: 30 sends an hour old (4 delivered in time, 24 stuck at server ack,
    2 ERROR), then `queued` recipients not sent yet."""
    now = timezone.now()
    blast = make_blast(30 + queued, device="sandbox")
    rows = (
        [(Status.READ_ACK, 60, 1)] * 4
        + [(Status.SERVER_ACK, 60, None)] * 24
        + [(Status.FAILED, 60, None)] * 2
    )
    set_sends(blast, rows + [(Status.QUEUED, None, None)] * queued, now=now)
    Blast.objects.filter(pk=blast.pk).update(state=Blast.State.SENDING, started_at=now - started_ago)
    blast.refresh_from_db()
    return blast


# --- the health of a blast, counted from the database ----------------------------------------


@pytest.mark.django_db
def test_health_counts_the_latest_window_of_sends_old_enough_to_judge():
    blast = make_blast(9)
    set_sends(
        blast,
        [
            (Status.READ_ACK, 40, 1),  # in time, but the oldest: outside a window of 5
            (Status.DELIVERY_ACK, 35, 15),  # delivered, later than the wait
            (Status.SERVER_ACK, 30, None),  # never delivered
            (Status.FAILED, 28, None),  # ERROR after sending
            (Status.PENDING, 25, None),  # never reached the server
            (Status.DELIVERY_ACK, 20, 2),  # in time
            (Status.SERVER_ACK, 5, None),  # too recent to judge
            (Status.FAILED, None, None),  # refused at sending (invalid number): never sent
            (Status.QUEUED, None, None),
        ],
    )
    other = make_blast(1)
    set_sends(other, [(Status.SERVER_ACK, 30, None)])

    assert blast_delivery_health(blast.pk, now=NOW, window=5, wait=WAIT) == DeliveryHealth(
        judged=5, delivered=1, late=1, server_ack=1, pending=1, errors=1
    )
    assert blast_delivery_health(blast.pk, now=NOW, window=30, wait=WAIT) == DeliveryHealth(
        judged=6, delivered=2, late=1, server_ack=1, pending=1, errors=1
    )
    since = NOW - timedelta(minutes=29)
    assert blast_delivery_health(blast.pk, now=NOW, window=30, wait=WAIT, since=since) == DeliveryHealth(
        judged=3, delivered=1, pending=1, errors=1
    )


@pytest.mark.django_db
def test_a_send_exactly_the_wait_old_is_judged_and_a_delivery_exactly_the_wait_late_is_in_time():
    blast = make_blast(3)
    set_sends(
        blast, [(Status.DELIVERY_ACK, 10, 10), (Status.DELIVERY_ACK, 30, 10.5), (Status.PENDING, 9.9, None)]
    )

    assert blast_delivery_health(blast.pk, now=NOW, window=30, wait=WAIT) == DeliveryHealth(
        judged=2, delivered=1, late=1
    )


# --- when it trips, and what it says -----------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "trips"),
    [
        (DeliveryHealth(judged=19, server_ack=19), False),  # too few to judge
        (DeliveryHealth(judged=20, server_ack=20), True),
        (DeliveryHealth(judged=30, delivered=15, server_ack=15), False),  # exactly the threshold
        (DeliveryHealth(judged=30, delivered=14, server_ack=16), True),
        (DeliveryHealth(judged=30, delivered=24, errors=6), False),  # exactly the error limit
        (DeliveryHealth(judged=30, delivered=23, errors=7), True),
        (DeliveryHealth(), False),
    ],
)
def test_thresholds_and_the_minimum_sample(health, trips):
    assert bool(delivery_health_problem(health, **RULES)) is trips


def test_stuck_at_server_ack_says_the_number_may_be_banned():
    health = DeliveryHealth(judged=30, delivered=4, server_ack=24, errors=2)
    assert delivery_health_problem(health, **RULES) == BANNED


def test_stuck_at_pending_says_the_device_may_be_offline():
    health = DeliveryHealth(judged=20, delivered=2, pending=15, late=3)
    assert delivery_health_problem(health, **RULES) == (
        "Only 2 of the last 20 messages were delivered within 10 min (threshold 50%); 15 never reached "
        "WhatsApp's server; 3 were delivered later. The device may be offline. Check the number, then resume."
    )


def test_too_many_errors_say_error_not_server_ack():
    health = DeliveryHealth(judged=30, delivered=20, server_ack=3, errors=7)
    assert delivery_health_problem(health, **RULES) == (
        "7 of the last 30 messages came back ERROR from WhatsApp (limit 20%). WhatsApp is refusing them and "
        "the number may be restricted: check it, then resume."
    )


# --- the breaker on a blast ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_sending_blast_whose_messages_stop_at_server_ack_is_paused_with_the_reason():
    blast = banned_blast()

    assert blast_check_delivery_health(blast=blast) is True
    blast.refresh_from_db()
    assert (blast.state, blast.state_reason) == (Blast.State.PAUSED, BANNED)


@pytest.mark.django_db
def test_the_breaker_is_off_with_a_window_of_0(settings):
    settings.DELIVERY_HEALTH_WINDOW = 0
    blast = banned_blast()

    assert blast_check_delivery_health(blast=blast) is False
    assert Blast.objects.get(pk=blast.pk).state == Blast.State.SENDING


def judging(monkeypatch) -> list[DeliveryHealth]:
    """Every health the breaker computes, kept for the test to look at."""
    seen, compute = [], health.blast_delivery_health

    def spy(*args, **kwargs):
        seen.append(compute(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(health, "blast_delivery_health", spy)
    return seen


@pytest.fixture
def gateway(gateway, settings):
    """The sandbox as our gateway (conftest's); the health check looks after every send."""
    settings.DELIVERY_HEALTH_CHECK_SECONDS = 0
    return gateway


def test_the_sender_pauses_the_blast_and_a_resume_is_judged_on_new_sends_only(gateway):
    blast = banned_blast(queued=4)  # a worker picks up a blast that went bad an hour ago

    assert send_due(client=get_client(), blast_id=blast.pk)["sent"] == 1
    blast.refresh_from_db()
    assert (blast.state, blast.state_reason) == (Blast.State.PAUSED, BANNED)
    assert blast.recipients.filter(status=Status.QUEUED).count() == 3

    blast_resume(blast=blast)  # a person looked at the number and resumes: the old window stays bad
    assert send_due(client=get_client(), blast_id=blast.pk)["sent"] == 3
    blast.refresh_from_db()
    assert (blast.state, blast.state_reason) == (Blast.State.COMPLETED, "")


def test_a_sender_looks_at_a_blast_at_most_every_check_seconds(gateway, settings, monkeypatch):
    looks = judging(monkeypatch)
    settings.DELIVERY_HEALTH_CHECK_SECONDS = 3600
    blast = make_blast(5, device="sandbox")
    blast_queue(blast=blast)
    assert send_due(client=get_client(), blast_id=blast.pk)["sent"] == 5
    assert len(looks) == 1

    settings.DELIVERY_HEALTH_CHECK_SECONDS = 0
    blast = make_blast(5, device="sandbox")
    blast_queue(blast=blast)
    send_due(client=get_client(), blast_id=blast.pk)
    assert len(looks) == 1 + 5


# --- the sandbox's knob -----------------------------------------------------------------------


def sandbox_timelines(**knobs) -> dict[str, tuple]:
    sandbox = Sandbox(SandboxConfig(seed=3, p_error=0.1, p_delivered=1, **knobs)).start()
    try:
        for n in range(40):
            body = {"device": "5850", "to": f"+6012{n:07d}", "message": "Hello"}
            headers = {"x-wsapme-token": "sandbox-token"}
            requests.post(f"{sandbox.url}/v1/sendMessage2", json=body, headers=headers, timeout=5)
        return {m.phone: (m.timeline, m.reply) for m in sandbox.messages.values()}
    finally:
        sandbox.stop()


def test_the_sandbox_drop_rate_stops_that_share_at_server_ack_and_leaves_the_rest_as_they_were():
    healthy, dropping = sandbox_timelines(), sandbox_timelines(drop_rate=0.5)

    dropped = {phone for phone in dropping if dropping[phone] != healthy[phone]}
    assert 10 <= len(dropped) <= 30
    for phone in dropped:
        assert dropping[phone] == ([(healthy[phone][0][0][0], "SERVER_ACK")], None)
    assert sandbox_timelines(drop_rate=0.5) == dropping  # seeded: the same messages drop every run
    banned = sandbox_timelines(drop_rate=1).values()
    assert {(tuple(name for _, name in timeline), reply) for timeline, reply in banned} == {
        (("SERVER_ACK",), None)
    }


# --- the whole path: the sandbox, its webhooks, a live server ------------------------------------


@pytest.fixture
def live_gateway(live_server, wsapme_sandbox, settings, applier):
    """The sandbox posting acks to a live server, an applier applying them; sends every 0.1 s, judged
    after 1 s, 10 at a time."""
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, wsapme_sandbox.url
    settings.SEND_RATE_PER_MINUTE, settings.SEND_JITTER = 600, 0
    settings.DELIVERY_HEALTH_WAIT, settings.DELIVERY_HEALTH_CHECK_SECONDS = 1, 0
    settings.DELIVERY_HEALTH_WINDOW, settings.DELIVERY_HEALTH_MIN_SAMPLE = 10, 10
    settings.DELIVERY_HEALTH_MIN_RATE, settings.DELIVERY_HEALTH_MAX_ERROR_RATE = 0.5, 0.2
    wsapme_sandbox.config.update(
        {
            "webhook_url": f"{live_server.url}/api/webhook/wsapme?token=test-webhook-secret",
            "seed": 5,
            "p_error": 0,
            "p_delivered": 1,
            "p_read": 0,  # fewer webhooks: sent, server ack, delivered
        }
    )
    return wsapme_sandbox


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("knob", "says"),
    [
        ({"drop_rate": 1}, "stopped at server ack, never delivered. The number may be banned"),
        ({"p_error": 1}, "came back ERROR from WhatsApp (limit 20%)"),
    ],
)
def test_a_sandbox_run_whose_delivery_drops_is_paused_and_says_why(live_gateway, knob, says):
    blast = make_blast(60, device="sandbox")
    blast_queue(blast=blast)
    outcomes = []

    def ban_after_five(outcome):
        outcomes.append(outcome)
        if len(outcomes) == 5:
            requests.post(f"{live_gateway.url}/_sandbox/config", json=knob, timeout=5).raise_for_status()

    tally = send_due(client=get_client(), blast_id=blast.pk, on_outcome=ban_after_five)

    blast.refresh_from_db()
    assert blast.state == Blast.State.PAUSED and says in blast.state_reason, blast.state_reason
    assert 10 < tally["sent"] < 40
    assert blast.recipients.filter(status=Status.QUEUED).count() == 60 - tally["sent"]


@pytest.mark.django_db(transaction=True)
def test_a_healthy_sandbox_run_is_judged_and_completes(live_gateway, monkeypatch):
    seen = judging(monkeypatch)
    blast = make_blast(30, device="sandbox")
    blast_queue(blast=blast)

    assert send_due(client=get_client(), blast_id=blast.pk)["sent"] == 30

    blast.refresh_from_db()
    assert (blast.state, blast.state_reason) == (Blast.State.COMPLETED, "")
    assert max(health.judged for health in seen) == 10  # it was looked at, with a full window
