"""The crash run: three looping `send_blasts` processes, one SIGKILLed every 2-4 s, gateway faults on,
the sandbox posting acks and replies to a live server while sends are still open, and a looping
`apply_events` process applying them.

It ends with nobody sent twice, nobody lost and no reply lost: every reply the gateway delivered
counts for the recipient who wrote it, also when it came while the send to that number was open
(a stalled or dropped answer, a sender killed inside the call).
"""

import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from django.conf import settings

from blasts.models import Blast, BlastRecipient, WebhookEvent
from blasts.tracking.events import webhook_events_apply_waiting

from .test_end_to_end import settle
from .test_sending_processes import queued_blast, sandbox_calls, sender_env, stop_all, wait_for

Status = BlastRecipient.Status
State = WebhookEvent.State


class LoopingSender:
    """`manage.py send_blasts --loop` (or another command), its output in a file."""

    def __init__(self, env: dict, logs, name: str, command: tuple = ("send_blasts", "--loop")):
        self.log = logs / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", *command],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_crash_run_sends_nobody_twice_and_loses_nobody_and_no_reply(
    live_server, wsapme_sandbox, tmp_path
):
    lease, recipients = 6, 200
    blast = queued_blast(recipients)
    wsapme_sandbox.config.update(
        {
            "webhook_url": f"{live_server.url}/api/webhook/wsapme?token=test-webhook-secret",
            "seed": 15,
            "latency": 0.05,
            "p_error": 0.05,
            "p_read": 0.9,
            "p_receipts_off": 0.1,
            "p_reply": 0.6,
            "p_opt_out": 0.1,
            "p_duplicate": 0.1,
            "shuffle_window": 0.3,
            "p_early_ack": 0.2,
            # The reply comes while our send still waits for its answer (4 s before it gives up).
            "stall": 5.0,
            "fault_rates": {"stall": 0.08, "drop_response": 0.05, "unavailable": 0.05, "not_json": 0.03},
        }
    )
    env = sender_env(
        wsapme_sandbox,
        SEND_RATE_PER_MINUTE=600,  # 10/s shared by the three: the kills land throughout the blast
        SEND_LEASE_SECONDS=lease,
        WSAPME_READ_TIMEOUT=4,
        SEND_BATCH_SIZE=4,
        SEND_BACKOFF_CAP_SECONDS=1,
    )
    rng = random.Random(20261201)
    applier = LoopingSender(env, tmp_path, "applier", ("apply_events", "--loop", "--every", "0.2"))
    try:
        senders = [LoopingSender(env, tmp_path, f"sender-{n}") for n in range(3)]
        kills = 0
        try:
            wait_for(lambda: sandbox_calls(wsapme_sandbox), timeout=30)
            while BlastRecipient.objects.filter(blast=blast, status=Status.QUEUED).exists() and kills < 12:
                time.sleep(rng.uniform(2, 4))
                victim = rng.randrange(len(senders))
                senders[victim].proc.send_signal(signal.SIGKILL)
                senders[victim].proc.wait(timeout=10)
                kills += 1
                senders[victim] = LoopingSender(env, tmp_path, f"sender-{kills + 2}")
            # The survivors finish the blast: they reap the dead senders' open sends after the lease.
            wait_for(
                lambda: Blast.objects.get(pk=blast.pk).state == Blast.State.COMPLETED,
                timeout=120,
                interval=0.5,
            )
        finally:
            stop_all(senders)
        settle(wsapme_sandbox, timeout=60)
        # The applier has applied every webhook the sandbox posted; SIGTERM stops it cleanly.
        wait_for(lambda: not WebhookEvent.objects.filter(state=State.RECEIVED).exists(), timeout=60)
        applier.proc.terminate()
        assert applier.proc.wait(timeout=30) == 0, applier.log.read_text()
    finally:
        stop_all([applier])
    webhook_events_apply_waiting()  # what the poller's next run does

    calls = [call for call in sandbox_calls(wsapme_sandbox) if call["message_id"]]
    per_phone = Counter(call["phone"] for call in calls)
    rows = {r["phone"].lstrip("+"): r for r in BlastRecipient.objects.filter(blast=blast).values()}
    statuses = Counter(r["status"] for r in rows.values())
    replies = [d for d in wsapme_sandbox.deliveries if "from" in d["payload"] and d.get("http_status") == 200]
    outcomes = Counter(call["outcome"] for call in sandbox_calls(wsapme_sandbox))
    print(f"kills {kills}, sends {len(calls)}, replies {len(replies)}, statuses {dict(statuses)}, {outcomes}")

    assert kills >= 5, "the blast ended before the run could kill enough senders"
    assert {phone: n for phone, n in per_phone.items() if n > 1} == {}, "sent twice"
    assert not statuses.keys() & {Status.QUEUED, Status.SENDING}, statuses
    for call in calls:  # nobody lost: each message the gateway took is known under its id, or unknown
        row = rows[call["phone"]]
        assert row["message_id"] in (call["message_id"], None), (call, row)
        assert row["status"] >= Status.PENDING or row["status"] in (Status.UNKNOWN, Status.FAILED), (
            call,
            row,
        )
    assert replies, "the run had no reply to lose"
    for delivery in replies:  # no reply lost
        row = rows[delivery["payload"]["from"].split("@")[0]]
        assert row["status"] >= Status.REPLIED and row["reply_text"], (delivery, row)
    lost = WebhookEvent.objects.filter(
        kind=WebhookEvent.Kind.REPLY, state__in=[State.UNATTRIBUTED, State.WAITING]
    )
    assert not lost.exists(), list(lost.values("body", "state", "recipient__status"))
