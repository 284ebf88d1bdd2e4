"""Webhooks, appliers and the poller racing on the same messages (threads with their own PostgreSQL connections)."""

import itertools
import random
import threading
import time
from collections import defaultdict

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from blasts.gateway.client import StatusResult
from blasts.gateway.payloads import parse_event
from blasts.models import BlastRecipient, StatusHistory, WebhookEvent
from blasts.statuses import status_from_gateway
from blasts.tracking.applier import webhook_events_apply
from blasts.tracking.events import webhook_events_store
from blasts.tracking.polling import _DeviceLimiter, poll_one

from .conftest import apply_events, make_blast

Status = BlastRecipient.Status
State = WebhookEvent.State
MESSAGES = 500
WEBHOOK_THREADS = POLL_THREADS = 3
APPLIER_THREADS = 2
# SERVER_ACK, DELIVERY_ACK and READ_ACK as the gateway spells them (PLAYED reads as READ_ACK); no ERROR.
WORDS = ["SERVER_ACK", 2, "2", "DELIVERY_ACK", 3, "3", "READ", "READ_ACK", 4, "4", "PLAYED", 5, "5"]
BLOCK = 25  # threads walk the messages in the same blocks, each in its own order, so they collide


def _webhook_body(rng: random.Random, message_id: str, phone: str, word) -> dict:
    """One ack in one of the shapes WSAPME sends."""
    jid = phone.lstrip("+") + "@s.whatsapp.net"
    when = int(timezone.now().timestamp())
    return rng.choice(
        [
            {"key": {"remoteJid": jid, "fromMe": True, "id": message_id}, "status": word},
            {
                "key": {"remoteJid": jid, "fromMe": True, "id": message_id},
                "status": word,
                "messageC2STimestamp": str(when),
            },
            {"messageId": message_id, "status": word},
            {"id": message_id, "ack": word, "timestamp": when},
            {"messageId": message_id, "status": word, "remoteJid": jid, "timestamp": when * 1000},
        ]
    )


class _FakeGateway:
    """message_status answers a random word of the stream (sometimes 'unknown'); remembers what it said."""

    def __init__(self, rng: random.Random, words):
        self.rng, self.words, self.said = rng, words, None

    def message_status(self, *, device: str, message_id: str) -> StatusResult:
        word = self.rng.choice(self.words)
        known = self.rng.random() > 0.1
        self.said = word if known else None
        raw = {"success": known, "data": {"status": word, "id": message_id} if known else {}}
        return StatusResult(known=known, status=word if known else None, occurred_at=None, raw=raw)


def _run_together(targets):
    """Start the threads on one barrier; re-raise the first exception any of them hit."""
    start = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def run(target):
        try:
            start.wait(timeout=30)
            target()
        except BaseException as exc:  # a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (a lock never released?)"
    if errors:
        raise errors[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_webhooks_appliers_and_polls_racing_on_500_messages_never_regress_or_lose_an_update():
    blast = make_blast(MESSAGES, status=Status.PENDING)
    recipients = list(blast.recipients.order_by("pk"))
    for recipient in recipients:
        recipient.message_id = f"3EB0RACE{recipient.pk:014d}"
    BlastRecipient.objects.bulk_update(recipients, ["message_id"])
    blocks = [recipients[i : i + BLOCK] for i in range(0, MESSAGES, BLOCK)]
    lock = threading.Lock()
    sent: dict[int, list[Status]] = defaultdict(list)  # every status any thread tried, per recipient
    applied: dict[int, list[Status]] = defaultdict(list)  # the ones the ledger reported applied
    stored: list[int] = []  # how many events each webhook request stored
    webhooks_running = [WEBHOOK_THREADS]
    all_stored = threading.Event()

    def stream(rng: random.Random):
        """Each message of each block 1-3 times, in a random order within the block."""
        for block in blocks:
            work = [recipient for recipient in block for _ in range(rng.randint(1, 3))]
            rng.shuffle(work)
            yield from work

    def webhooks(seed):
        """The web workers: store each ack raw as it comes, sometimes a few in one body."""
        rng = random.Random(seed)
        work = list(stream(rng))
        try:
            while work:
                size = rng.randint(1, 4)
                body, work = work[:size], work[size:]
                words = [rng.choice(WORDS) for _ in body]
                events = [
                    _webhook_body(rng, r.message_id, r.phone, w) for r, w in zip(body, words, strict=True)
                ]
                assert webhook_events_store(events) == len(events)
                with lock:
                    stored.append(len(events))
                    for recipient, word in zip(body, words, strict=True):
                        sent[recipient.pk].append(status_from_gateway(word))
        finally:
            with lock:
                webhooks_running[0] -= 1
                if not webhooks_running[0]:
                    all_stored.set()

    def appliers(seed):
        """`apply_events`: batches of any size, claimed with SKIP LOCKED while the others apply theirs."""
        rng = random.Random(seed)
        while True:
            last_round = all_stored.is_set()  # every event was committed before this claim
            if not sum(webhook_events_apply(limit=rng.randint(1, 40)).values()):
                if last_round:
                    return
                time.sleep(0.002)

    def polls(seed):
        rng = random.Random(seed)
        gateway, limiter = _FakeGateway(rng, WORDS), _DeviceLimiter(0)
        for recipient in stream(rng):
            outcome = poll_one(gateway, limiter, recipient.pk, recipient.message_id, blast.device)
            assert outcome in ("updated", "unchanged", "unknown"), outcome
            assert (outcome == "unknown") == (gateway.said is None)
            if gateway.said is None:
                continue
            with lock:
                sent[recipient.pk].append(status_from_gateway(gateway.said))
                if outcome == "updated":
                    applied[recipient.pk].append(status_from_gateway(gateway.said))

    _run_together(
        [lambda seed=seed: webhooks(seed) for seed in range(WEBHOOK_THREADS)]
        + [lambda seed=seed: appliers(seed) for seed in range(50, 50 + APPLIER_THREADS)]
        + [lambda seed=seed: polls(seed) for seed in range(100, 100 + POLL_THREADS)]
    )

    assert apply_events() == []  # the appliers left nothing unapplied
    webhook_states = list(WebhookEvent.objects.values_list("state", flat=True))
    assert set(webhook_states) <= {State.APPLIED, State.NO_CHANGE}
    assert len(webhook_states) == sum(stored)
    for event in WebhookEvent.objects.filter(state=State.APPLIED):
        applied[event.recipient_id].append(parse_event(event.body).status)
    history = defaultdict(list)
    for pk, from_status, to_status in (
        StatusHistory.objects.filter(recipient__blast=blast)
        .order_by("id")
        .values_list("recipient_id", "from_status", "to_status")
    ):
        history[pk].append((from_status, to_status))
    final = dict(blast.recipients.values_list("pk", "status"))
    for recipient in recipients:
        chain = history[recipient.pk]
        assert chain[0] == (Status.QUEUED, Status.PENDING)
        # Each row starts where the previous one ended and goes strictly up: no lost update, no regression.
        assert all(later[0] == earlier[1] for earlier, later in itertools.pairwise(chain)), chain
        assert all(to_status > from_status for from_status, to_status in chain), chain
        assert final[recipient.pk] == chain[-1][1] == max(sent[recipient.pk], default=Status.PENDING)
        assert sorted(to_status for _, to_status in chain[1:]) == sorted(applied[recipient.pk])
    # Every stage reached has its first-reached time.
    assert not blast.recipients.filter(status__gte=Status.SERVER_ACK, server_ack_at__isnull=True).exists()
    assert not blast.recipients.filter(status__gte=Status.DELIVERY_ACK, delivered_at__isnull=True).exists()
    assert not blast.recipients.filter(status__gte=Status.READ_ACK, read_at__isnull=True).exists()


# The same DELIVERY_ACK in each shape WSAPME may send it in.
SHAPES = {
    "nested": lambda message_id: {
        "key": {"remoteJid": "60123456789@s.whatsapp.net", "fromMe": True, "id": message_id},
        "status": "DELIVERY_ACK",
        "messageC2STimestamp": "1634061785",
    },
    "flat": lambda message_id: {"messageId": message_id, "status": "DELIVERY_ACK"},
    "flat-ack": lambda message_id: {"id": message_id, "ack": 3, "timestamp": 1634061785},
}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("shape", SHAPES)
def test_an_event_delivered_ten_times_at_once_leaves_one_history_row(shape):
    recipient = make_blast(1, status=Status.PENDING).recipients.get()
    message_id = f"3EB0TEN{recipient.pk:015d}"
    BlastRecipient.objects.filter(pk=recipient.pk).update(message_id=message_id)
    payload = SHAPES[shape](message_id)

    def deliver():
        """WSAPME's ten deliveries at once, each applied at once by an applier of its own."""
        response = Client().post(
            "/api/webhook/wsapme",
            data=payload,
            content_type="application/json",
            headers={"X-Webhook-Token": "test-webhook-secret"},
        )
        assert response.status_code == 200, response.content
        assert response.json() == {"received": 1}
        webhook_events_apply(limit=1)  # SKIP LOCKED: each applier takes one, all race on the same row

    _run_together([deliver] * 10)
    assert apply_events() == []  # each of the ten appliers applied one

    states = list(WebhookEvent.objects.values_list("state", flat=True))
    assert sorted(states) == ["applied"] + ["no_change"] * 9
    assert recipient.history.filter(to_status=Status.DELIVERY_ACK).count() == 1
    assert recipient.history.count() == 2  # QUEUED -> PENDING, PENDING -> DELIVERY_ACK
    assert WebhookEvent.objects.filter(message_id=message_id).count() == 10  # every delivery kept raw
    recipient.refresh_from_db()
    assert recipient.status == Status.DELIVERY_ACK
