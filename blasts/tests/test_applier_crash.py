"""The applier's crash test: `apply_events --loop` processes SIGKILLed mid-batch, 20 times.

Two appliers share the queue. The test plays the webhook: it stores the acks for 5,000 sent messages
(server, delivery and read ack each, in the shapes WSAPME sends, one in ten delivered twice) a
twentieth before each kill, and more whenever the queue runs low (once all are stored, acks delivered
again), so the appliers are busy when the kills come. After each batch more has committed, an
applier is frozen (SIGSTOP), its database session looked at (which statement of its batch it stopped
at, or that it was between batches) and SIGKILLed, and a new one started in its place: every other
time a random one at a random moment, every other time one whose batch has written and not
committed. The survivors drain the queue.

Then every event was applied exactly once: none is left received; each one the ledger applied made
exactly one history row, the others none; no recipient reached a status twice; all were read.
The appliers use the test database, so the test is transactional; PostgreSQL only (SKIP LOCKED).
"""

import json
import math
import random
import re
import signal
import time
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import pytest
from django.db import connection, transaction

from blasts.models import BlastRecipient, StatusHistory, WebhookEvent
from blasts.services import Advance, recipients_advance_many
from blasts.statuses import status_from_gateway
from blasts.tracking.applier import webhook_events_apply
from blasts.tracking.events import webhook_events_store

from .conftest import make_blast
from .test_crash_run import LoopingSender
from .test_sending_processes import child_env

Status = BlastRecipient.Status
State = WebhookEvent.State
Source = StatusHistory.Source
FIXTURES = Path(__file__).parent / "fixtures"
RECIPIENTS = 5000
APPLIERS = 2
KILLS = 20
BATCH = 200
# Each message's acks as the gateway words them: by name in the nested and flat shapes, by number in `ack`.
ACKS = [("SERVER_ACK", 2), ("DELIVERY_ACK", 3), ("READ_ACK", 4)]
# Where an applier's batch is, by the statement its session ran last (the first match).
STAGES = [
    (r'^UPDATE "blasts_webhookevent"|^WITH v \("id", "kind"', "events marked"),
    (r'^INSERT INTO "blasts_statushistory"', "history written"),
    (r'^UPDATE "blasts_blastrecipient"|^WITH v \("id", "status"', "recipients written"),
    (r'^SELECT .* FROM "blasts_blastrecipient"', "recipients locked"),
    (r'^SELECT .* FROM "blasts_webhookevent"', "events claimed"),
]
# Every other kill waits for a batch that has written (its history not committed yet).
WRITTEN = {"recipients written", "history written", "events marked"}


def ack_body(rng: random.Random, recipient: BlastRecipient, word: str, number: int) -> dict:
    """One ack for `recipient`'s message, in one of the shapes WSAPME sends (the fixtures')."""
    shape = rng.randrange(3)
    if shape == 0:  # the send answer's nested shape, with the recipient's JID
        body = json.loads((FIXTURES / "ack_nested.json").read_text())
        body["key"] |= {"id": recipient.message_id, "remoteJid": f"{recipient.phone[1:]}@s.whatsapp.net"}
        return body | {"status": word}
    if shape == 1:
        return json.loads((FIXTURES / "ack_flat.json").read_text()) | {
            "messageId": recipient.message_id,
            "status": word,
        }
    return {"id": recipient.message_id, "ack": number, "timestamp": 1634061785}


def sent_recipients() -> list[BlastRecipient]:
    """RECIPIENTS recipients of one blast, all sent: PENDING, each with its message id."""
    recipients = list(make_blast(RECIPIENTS).recipients.order_by("pk"))
    for recipient in recipients:
        recipient.message_id = f"3EB0CRASH{recipient.pk:013d}"
    BlastRecipient.objects.bulk_update(recipients, ["message_id"], batch_size=500)
    with transaction.atomic():
        recipients_advance_many(
            [Advance(recipient=r.pk, status=Status.PENDING, occurred_at=None, raw={}) for r in recipients],
            source=Source.SEND,
        )
    return recipients


def ack_stream(rng: random.Random, recipients: list[BlastRecipient]) -> list[dict]:
    """Three acks per message in arrival order, shuffled within windows of 30 (a later ack sometimes
    comes first, so some earlier ones change nothing); one in ten delivered twice."""
    bodies = [ack_body(rng, r, word, number) for r in recipients for word, number in ACKS]
    bodies = [copy for body in bodies for copy in [body, dict(body)][: 1 + (rng.random() < 0.1)]]
    windows = [bodies[i : i + 30] for i in range(0, len(bodies), 30)]
    for window in windows:
        rng.shuffle(window)
    return [body for window in windows for body in window]


def received() -> int:
    return WebhookEvent.objects.filter(state=State.RECEIVED).count()


class Webhook:
    """The stream stored a part before each kill (`deliver`); in between, `keep_busy` stores more of
    it whenever fewer than a batch each wait (once it is all stored, acks delivered again), so the
    appliers are inside a batch when the kills come."""

    def __init__(self, rng: random.Random, stream: list[dict], parts: int):
        self.rng, self.stream, self.part = rng, stream, math.ceil(len(stream) / parts)
        self.delivered, self.again, self.looked = 0, 0, 0.0

    def deliver(self, count: int | None = None) -> None:
        """The next part of the stream (`count` events, or all that is left with count=0)."""
        end = self.delivered + (self.part if count is None else count or len(self.stream))
        for start in range(self.delivered, min(end, len(self.stream)), 1000):
            webhook_events_store(self.stream[start : min(start + 1000, end)])
        self.delivered = min(end, len(self.stream))

    def keep_busy(self) -> None:
        """Fewer than a batch each waiting: more of the stream, or once it is all stored, acks again."""
        if time.monotonic() - self.looked < 0.1 or not self.delivered:  # ten looks a second
            return
        self.looked = time.monotonic()
        if received() >= APPLIERS * BATCH:
            return
        if self.delivered < len(self.stream):
            self.deliver(APPLIERS * BATCH)
        else:
            again = self.rng.choices(self.stream, k=APPLIERS * BATCH)
            self.again += webhook_events_store([dict(body) for body in again])

    @property
    def stored(self) -> int:
        return self.delivered + self.again


class Applier(LoopingSender):
    """`manage.py apply_events --loop`, its output in a file; its database sessions named after it."""

    def __init__(self, env: dict, logs: Path, name: str):
        self.name = name
        # --skip-checks: 22 starts, each shorter (the system checks are not what is tested here).
        command = ("apply_events", "--loop", "--batch", str(BATCH), "--skip-checks")
        # PGAPPNAME: libpq's application_name, seen in pg_stat_activity.
        super().__init__(env | {"PGAPPNAME": name}, logs, name, command=command)

    def output(self) -> str:
        return f"{self.name}: {self.log.read_text()[-2000:]}"


def stages(appliers: list[Applier]) -> dict[Applier, str]:
    """Where each connected applier is, by its session (not its LISTEN one): inside a batch, the
    batch's last statement; else between batches. One that has not connected yet is left out."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT application_name, state, query, backend_xid IS NOT NULL FROM pg_stat_activity"
            " WHERE application_name = ANY(%s) AND query NOT ILIKE 'listen%%'",
            [[applier.name for applier in appliers]],
        )
        sessions = {name: (state, query, claimed) for name, state, query, claimed in cursor.fetchall()}
    found = {}
    for applier in appliers:
        if applier.name in sessions:
            state, query, claimed = sessions[applier.name]
            stage = next((stage for pattern, stage in STAGES if re.match(pattern, query, re.S)), None)
            # Inside a batch: a transaction that claimed events (FOR UPDATE gave it a transaction id)
            # and has not committed (idle in it, or running one of the batch's statements).
            inside = claimed and stage and state in ("idle in transaction", "active")
            found[applier] = stage if inside else "between batches"
    return found


def freeze(rng: random.Random, appliers: list[Applier], wanted, meanwhile) -> tuple[Applier, str]:
    """Freeze (SIGSTOP) an applier where `wanted(stage)`, or after 5 s wherever a connected one is;
    return it and its stage. One that moved on before it stopped gets SIGCONT and runs on. Frozen, it
    can no longer commit: a SIGKILL now lands where it stopped. `meanwhile()` runs as it waits."""
    picky_until, deadline = time.monotonic() + 5, time.monotonic() + 30
    while time.monotonic() < deadline:
        picky = time.monotonic() < picky_until
        candidates = [a for a, stage in stages(appliers).items() if not picky or wanted(stage)]
        if candidates:
            applier = rng.choice(candidates)
            applier.proc.send_signal(signal.SIGSTOP)
            stage = stages([applier]).get(applier)
            if stage is not None and (not picky or wanted(stage)):
                return applier, stage
            applier.proc.send_signal(signal.SIGCONT)
        meanwhile()
        time.sleep(0.005)
    raise AssertionError("no applier connected to the database in 30 s")


def wait(seconds: float, meanwhile) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        meanwhile()
        time.sleep(0.01)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_appliers_sigkilled_mid_batch_20_times_apply_every_event_exactly_once(tmp_path, settings):
    settings.BLAST_MAX_RECIPIENTS = RECIPIENTS
    rng = random.Random(20261202)
    started = time.monotonic()
    recipients = sent_recipients()
    webhook = Webhook(rng, ack_stream(rng, recipients), KILLS)
    env = child_env()
    appliers = [Applier(env, tmp_path, f"applier-{n}") for n in range(APPLIERS)]
    everyone = list(appliers)
    landed: list[str] = []
    applied = [0]  # events applied when each kill came
    seeded = time.monotonic()

    def applied_so_far() -> int:
        return webhook.stored - received()

    try:
        for kill in range(KILLS):
            webhook.deliver()
            # Each kill after a batch more committed (by the one killed, or another): the work goes on.
            deadline = time.monotonic() + 30
            while applied_so_far() < applied[-1] + BATCH:
                assert time.monotonic() < deadline, "no batch was applied in 30 s"
                wait(0.05, webhook.keep_busy)
            if kill % 2:  # inside a batch that has written, not committed yet
                victim, stage = freeze(rng, appliers, lambda stage: stage in WRITTEN, webhook.keep_busy)
            else:  # a random one of those connected, wherever it is at a random moment
                wait(rng.uniform(0.05, 0.5), webhook.keep_busy)
                victim, stage = freeze(rng, appliers, lambda stage: True, webhook.keep_busy)
            landed.append(stage)
            applied.append(applied_so_far())
            victim.kill()
            new = Applier(env, tmp_path, f"applier-{APPLIERS + kill}")
            appliers[appliers.index(victim)] = new
            everyone.append(new)
        killed, left = time.monotonic(), received()
        webhook.deliver(0)
        while received():
            assert time.monotonic() - killed < 60, "the appliers did not drain the queue"
            time.sleep(0.1)
    except BaseException:
        print("\n".join(applier.output() for applier in everyone))
        raise
    finally:
        for applier in appliers:
            applier.kill()
    drained = time.monotonic()
    assert not webhook_events_apply(), "an event was left"  # what one more `apply_events` run finds
    where = Counter(landed)
    print(
        f"\n{webhook.stored} events ({webhook.again} delivered again to keep the appliers busy); seeded in "
        f"{seeded - started:.1f}s, {KILLS} kills in {killed - seeded:.1f}s (events applied at each: "
        f"{applied[1:]}), drained {left} in {drained - killed:.1f}s; the kills landed: {dict(where)}"
    )
    assert sum(n for stage, n in where.items() if stage != "between batches") >= KILLS // 2, where
    assert sum(where[stage] for stage in WRITTEN) >= KILLS // 4, where

    # None lost: every event stored was applied, or changed nothing (a duplicate, or older than its
    # message's status), and says which recipient it was for.
    events = list(
        WebhookEvent.objects.values("id", "state", "status", "message_id", "recipient_id", "applied_at")
    )
    assert len(events) == webhook.stored
    assert Counter(e["state"] for e in events).keys() <= {State.APPLIED, State.NO_CHANGE}
    by_message_id = {r.message_id: r.pk for r in recipients}
    assert all(e["recipient_id"] == by_message_id[e["message_id"]] and e["applied_at"] for e in events)

    # Exactly once: each applied event made one history row (the ones that changed nothing made none),
    # and each recipient went up the ladder one step per applied ack, never to a status twice.
    moves = defaultdict(list)
    for e in events:
        if e["state"] == State.APPLIED:
            moves[e["recipient_id"]].append(status_from_gateway(e["status"]))
    history = defaultdict(list)
    for row in StatusHistory.objects.filter(recipient__in=by_message_id.values()).order_by("id").values():
        history[row["recipient_id"]].append(row)
    webhook_rows = sum(row["source"] == Source.WEBHOOK for rows in history.values() for row in rows)
    assert webhook_rows == sum(map(len, moves.values()))
    final = dict(BlastRecipient.objects.filter(pk__in=by_message_id.values()).values_list("pk", "status"))
    for recipient in recipients:
        rows = history[recipient.pk]
        chain = [(row["from_status"], row["to_status"]) for row in rows]
        assert chain[0] == (Status.QUEUED, Status.PENDING) and rows[0]["source"] == Source.SEND, chain
        assert all(row["source"] == Source.WEBHOOK for row in rows[1:]), chain
        assert all(later[0] == earlier[1] for earlier, later in pairwise(chain)), chain
        assert all(to_status > from_status for from_status, to_status in chain), chain
        assert sorted(to for _, to in chain[1:]) == sorted(moves[recipient.pk]), (chain, moves[recipient.pk])
        assert chain[-1][1] == final[recipient.pk] == Status.READ_ACK, chain
    per_status = Counter((row["recipient_id"], row["to_status"]) for rows in history.values() for row in rows)
    assert max(per_status.values()) == 1
