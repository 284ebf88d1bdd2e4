"""Issue 21, part 2 end to end: a test-then-send blast in the sandbox, its replies by webhook, its
winner chosen by the sender, and a restart of the sender in the middle of the wait."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connections

from blasts.gateway.client import get_client
from blasts.lifecycle import blast_queue
from blasts.models import Blast, BlastRecipient, VariantTest
from blasts.recipients import parse_recipients
from blasts.sending import worker
from blasts.services import blast_create

from .test_end_to_end import applied, settle
from .test_sandbox import wait_for

Status = BlastRecipient.Status


def start_sender(blast):
    """A looping sender in a thread, as `send_blasts --loop` runs; returns a function that stops it."""
    stop = threading.Event()

    def run():
        try:
            worker.Sender(client=get_client(), blast_id=blast.pk, stop=stop, idle_seconds=0.1).run(loop=True)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def halt():
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()

    return halt


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("knobs", "winner"),
    [
        ({"p_reply": 0.1, "p_reply_if": {"Better": 0.9}}, "B"),  # B's words get replies
        # The same chance for both: inconclusive. At 95% intervals, about one equal pair in 20 still comes
        # out "beyond noise" by chance (seed 21 does, 68% against 40% of 25): the sandbox's seed and the
        # fixed numbers make this run's draws the same every time.
        ({"p_reply": 0.5}, ""),
    ],
)
def test_the_sender_tests_waits_across_a_restart_and_sends_the_rest_the_winner(
    live_server, wsapme_sandbox, settings, applier, monkeypatch, knobs, winner
):
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, wsapme_sandbox.url
    settings.SEND_RATE_PER_MINUTE = 0
    monkeypatch.setattr(worker, "HOUSEKEEPING_EVERY", timedelta(seconds=0.2))
    wsapme_sandbox.config.update(
        {
            "webhook_url": f"{live_server.url}/api/webhook/wsapme?token=test-webhook-secret",
            "seed": 22,
            "p_error": 0,
            "p_delivered": 1,
            "p_read": 1,
            "p_opt_out": 0,
            "p_receipts_off": 1,  # fewer webhooks to wait for: a reply says it was read
            **knobs,
        }
    )
    phones = [("", f"+60198{n:06d}", "") for n in range(100)]  # fixed numbers: the sandbox's draws are too
    blast = blast_create(
        tag="Raya",
        message="Plain offer",
        variants=["Better offer"],
        recipients=parse_recipients(phones),
        device="sandbox",
        test=VariantTest(share=50, wait=timedelta(seconds=2)),
    ).blast
    blast_queue(blast=blast)

    halt = start_sender(blast)
    test = wait_for(
        lambda: VariantTest.objects.filter(ends_at__isnull=False).first()
    )  # the test's sends done
    halt()  # the sender stops in the middle of the wait...
    assert VariantTest.objects.get().decided_at is None
    assert {call["message"] for call in wsapme_sandbox.calls} == {"Plain offer", "Better offer"}
    assert len(wsapme_sandbox.calls) == 50
    settle(wsapme_sandbox)  # the test's replies all in, as a wait of hours would let them
    applied()

    halt = start_sender(blast)  # ...and a new one carries on
    wait_for(lambda: Blast.objects.get().state == Blast.State.COMPLETED, timeout=60)
    halt()
    test = VariantTest.objects.get()
    assert test.decided_at >= test.ends_at and test.winner == winner, test.verdict
    sent = Counter(call["message"] for call in wsapme_sandbox.calls)
    assert sum(sent.values()) == 100  # each once
    if winner:
        assert test.verdict.startswith("B won") and sent == {"Plain offer": 25, "Better offer": 75}
    else:
        assert test.verdict.startswith("Inconclusive") and sent == {"Plain offer": 50, "Better offer": 50}
    assert BlastRecipient.objects.filter(status__gte=Status.PENDING).count() == 100
