"""Sending with real `send_blasts` processes on PostgreSQL against the sandbox gateway.

Killed senders never send twice nor lose a recipient, and several senders share one blast
and its device's pacing. The subprocesses use the test database, so the data is committed.
"""

import bisect
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime

import pytest
import requests
from django.conf import settings

from blasts.lifecycle import blast_queue
from blasts.models import Blast, BlastRecipient

from .conftest import database_url, make_blast

Status = BlastRecipient.Status
FINAL = {Status.PENDING, Status.FAILED, Status.UNKNOWN, Status.SKIPPED}
# The child inherits the test run's environment (pytest-env's secrets, PATH), but not a
# developer's own database, gateway or pacing: those are set below, or left at their defaults.
NOT_INHERITED = ("DATABASE_", "SEND_", "BLAST_", "WSAPME_")
INHERITED = {"WSAPME_WEBHOOK_SECRETS"}


def child_env() -> dict:
    """The environment of a `manage.py` process on the test database, DEBUG off, in sandbox mode."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in INHERITED or not name.startswith(NOT_INHERITED)
    }
    return env | {
        "DATABASE_URL": database_url(),
        "WSAPME_TOKEN": "",  # sandbox mode: the client sends the token the sandbox accepts
        "WSAPME_SANDBOX": "true",  # with DEBUG off, sandbox mode must be asked for
        "SECRET_KEY": os.environ["SECRET_KEY"],  # pytest-env's; DEBUG off insists on one
        "DEBUG": "false",
        "ENV_FILE": "/nonexistent",
        "LOG_LEVEL": "WARNING",  # one INFO line per send would only fill the log files
    }


def sender_env(sandbox, **overrides) -> dict:
    """The environment of a `send_blasts` process: the test database, the sandbox and `overrides`."""
    env = child_env() | {
        "WSAPME_BASE_URL": sandbox.url,
        "SEND_WINDOW": "",
        "SEND_DAYS": "1234567",
        "SEND_RATE_PER_MINUTE": "0",
        "SEND_JITTER": "0",
        "SEND_LEASE_SECONDS": "30",
        "WSAPME_CONNECT_TIMEOUT": "2",
        "WSAPME_READ_TIMEOUT": "5",
        "SEND_BATCH_SIZE": "20",
    }
    return env | {name: str(value) for name, value in overrides.items()}


class SenderProcess:
    """One `manage.py send_blasts` process, its output in files (a full pipe would block it)."""

    def __init__(self, env: dict, logs, name: str):
        self.stdout_path, self.stderr_path = logs / f"{name}.out", logs / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "send_blasts"],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=out,
                stderr=err,
            )

    def summary(self) -> str:
        return self.stdout_path.read_text()

    def output(self) -> str:
        return self.summary() + self.stderr_path.read_text()[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def start_sender(env: dict, logs, name: str) -> SenderProcess:
    return SenderProcess(env, logs, name)


def stop_all(senders: list[SenderProcess]) -> None:
    """SIGKILL whatever still runs: a live sender would hold connections the teardown flush waits on."""
    for sender in senders:
        sender.kill()


def sandbox_calls(sandbox) -> list[dict]:
    return requests.get(f"{sandbox.url}/_sandbox/calls", timeout=10).json()["calls"]


def sandbox_messagesure(sandbox, **knobs) -> None:
    requests.post(f"{sandbox.url}/_sandbox/config", json=knobs, timeout=10).raise_for_status()


def sent_times(calls: list[dict]) -> list[float]:
    """Epoch seconds of the accepted sends, in order."""
    return sorted(
        datetime.fromisoformat(call["at"]).timestamp() for call in calls if call["outcome"] == "sent"
    )


def rate(times: list[float]) -> float:
    """Sends per second, from the first send to the last."""
    return (len(times) - 1) / (times[-1] - times[0])


def max_in_window(times: list[float], seconds: float) -> int:
    """The most sends inside any `seconds`-long window (each window starting at a send)."""
    return max(bisect.bisect_left(times, start + seconds) - i for i, start in enumerate(times))


def wait_for(condition, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def queued_blast(recipients: int) -> Blast:
    blast = make_blast(recipients, device="sandbox")
    blast_queue(blast=blast)
    return blast


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sigkilled_senders_never_send_twice_nor_lose_anyone(wsapme_sandbox, tmp_path):
    kills, lease = 20, 2
    blast = queued_blast(500)
    # Each answer takes 50 ms, so a good share of the kills land while a request is in flight.
    sandbox_messagesure(wsapme_sandbox, latency=0.05)
    env = sender_env(
        wsapme_sandbox,
        SEND_RATE_PER_MINUTE=0,
        SEND_LEASE_SECONDS=lease,
        WSAPME_READ_TIMEOUT=1,
        SEND_BATCH_SIZE=5,
    )
    rng = random.Random(20240611)
    senders: list[SenderProcess] = []
    try:
        for n in range(kills):
            before = len(sandbox_calls(wsapme_sandbox))
            sender = start_sender(env, tmp_path, f"killed-{n}")
            senders.append(sender)
            # Django takes a while to start; wait for the first send so the kill lands mid-run,
            # then at a random point of the claim/reserve/mark/send/record cycle.
            wait_for(lambda before=before: len(sandbox_calls(wsapme_sandbox)) > before, timeout=30)
            time.sleep(rng.uniform(0.0, 1.0))
            assert sender.proc.poll() is None, f"sender {n} exited before its kill:\n{sender.output()}"
            sender.proc.send_signal(signal.SIGKILL)
            assert sender.proc.wait(timeout=10) == -signal.SIGKILL

        # The kills hit a blast still being sent, not a finished one.
        left = BlastRecipient.objects.filter(blast=blast, status=Status.QUEUED).count()
        assert left > 0
        # Past the lease, the dead senders' SENDING rows are theirs no more: the last run reaps them.
        time.sleep(lease + 0.5)
        final = start_sender(env, tmp_path, "final")
        senders.append(final)
        assert final.proc.wait(timeout=90) == 0, final.output()
    finally:
        stop_all(senders)

    calls = [call for call in sandbox_calls(wsapme_sandbox) if call["outcome"] == "sent"]
    per_phone = Counter(call["phone"] for call in calls)
    duplicates = {phone: count for phone, count in per_phone.items() if count > 1}
    recipients = list(BlastRecipient.objects.filter(blast=blast).values("phone", "status", "message_id"))
    statuses = Counter(r["status"] for r in recipients)
    sent_ids = {call["message_id"] for call in calls}
    print(f"left after the kills {left}, sends {len(calls)}, statuses {dict(statuses)}")

    assert duplicates == {}
    assert set(statuses) <= FINAL, statuses
    assert statuses[Status.UNKNOWN] <= kills  # at most the one send in flight per kill
    assert all(r["message_id"] in sent_ids for r in recipients if r["status"] == Status.PENDING)
    # Nobody lost: each number the gateway took is PENDING under that very id, or UNKNOWN
    # because its sender died between the send and the record.
    by_phone = {r["phone"].lstrip("+"): r for r in recipients}
    for call in calls:
        recipient = by_phone[call["phone"]]
        assert (recipient["status"], recipient["message_id"]) in {
            (Status.PENDING, call["message_id"]),
            (Status.UNKNOWN, None),
        }, (call, recipient)
    blast.refresh_from_db()
    assert blast.state == Blast.State.COMPLETED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_four_senders_share_one_blast_and_its_pacing(wsapme_sandbox, tmp_path):
    # 30/s, not 50/s: pacing never catches up a late slot, and on a busy 2-core machine four
    # senders reached only 91-95 % of 50/s, too close to the 90 % floor. 30/s holds 97-99 %.
    per_minute, jitter = 1800, 0.2
    per_second = per_minute / 60
    blast = queued_blast(500)
    env = sender_env(wsapme_sandbox, SEND_RATE_PER_MINUTE=per_minute, SEND_JITTER=jitter)
    senders: list[SenderProcess] = []
    try:
        senders = [start_sender(env, tmp_path, f"sender-{n}") for n in range(4)]
        codes = [sender.proc.wait(timeout=90) for sender in senders]
    finally:
        stop_all(senders)

    assert codes == [0, 0, 0, 0], [sender.output() for sender in senders]
    calls = sandbox_calls(wsapme_sandbox)
    assert len(calls) == 500
    assert all(count == 1 for count in Counter(call["phone"] for call in calls).values())
    # Each process took part: its summary line counts its own sends.
    sent = [int(re.search(r"sent (\d+)", sender.summary())[1]) for sender in senders]
    assert sum(sent) == 500
    assert all(sent), sent
    assert set(BlastRecipient.objects.filter(blast=blast).values_list("status", flat=True)) == {
        Status.PENDING
    }

    # The four share the device's one schedule, so together they keep its rate, not four times it.
    times = sent_times(calls)
    measured, busiest = rate(times), max_in_window(times, 2.0)
    print(f"per process {sent}, rate {measured:.2f}/s of {per_second:.0f}/s, busiest 2 s {busiest}")
    assert 0.90 * per_second <= measured <= 1.10 * per_second
    assert busiest <= 2.0 * per_second * 1.5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_paced_run_keeps_the_configured_rate(wsapme_sandbox, tmp_path):
    per_minute, jitter = 600, 0.3
    per_second = per_minute / 60
    queued_blast(60)
    env = sender_env(wsapme_sandbox, SEND_RATE_PER_MINUTE=per_minute, SEND_JITTER=jitter)
    sender = start_sender(env, tmp_path, "sender")
    try:
        assert sender.proc.wait(timeout=60) == 0, sender.output()
    finally:
        sender.kill()

    times = sent_times(sandbox_calls(wsapme_sandbox))
    assert len(times) == 60
    measured, busiest = rate(times), max_in_window(times, 2.0)
    print(f"rate {measured:.2f}/s of {per_second:.0f}/s, busiest 2 s {busiest}")
    assert 0.90 * per_second <= measured <= 1.10 * per_second
    assert busiest <= 2.0 * per_second * 1.5
