"""2. Send overhead: sandbox latency 0, so all that is left is the ledger's own work per message
(claim, mark SENDING, send, commit the outcome, history rows).

Messages per second through `send_due` with C senders (threads of this process), and through P
`manage.py send_blasts --concurrency T` processes sharing the queue (how a deployment scales past one
process's GIL), against a bare loop of the same client calls with as many threads and no database,
in the same run.
"""

import os
import subprocess
import sys
import tempfile
import time

from bench import common

FULL = {"messages": 3000, "concurrency": (1, 4), "processes": (2, 2)}
SMOKE = {"messages": 100, "concurrency": (1, 4), "processes": (2, 2)}
TARGET = 300.0  # messages per second


def bench(smoke: bool) -> list[common.Row]:
    from blasts.models import BlastRecipient
    from blasts.sending.worker import send_due

    size = SMOKE if smoke else FULL
    n = size["messages"]
    rows = []
    with common.SandboxProcess(latency=0) as sandbox:
        client = sandbox.client()
        common.round_trip(client)  # warm the connection and the sandbox
        for offset, c in enumerate(size["concurrency"]):
            start = time.perf_counter()
            common.send_bare(client, n, c)
            bare = time.perf_counter() - start
            blast = common.queued_blast(n, first_phone=offset * n)
            common.say(f"send_due: {n} messages, {c} sender(s), gateway latency 0")
            meter = common.CpuMeter(
                {"sender process": lambda: [os.getpid()], "sandbox": lambda: [sandbox.proc.pid]}
            ).start()
            start = time.perf_counter()
            tally = send_due(client=client, blast_id=blast.pk, concurrency=c)
            wall = time.perf_counter() - start
            meter.stop()
            sent = BlastRecipient.objects.filter(blast=blast, status=BlastRecipient.Status.PENDING).count()
            common.check(
                tally["sent"] == n and sent == n, f"send_due sent {dict(tally)}, {sent} PENDING, not {n}"
            )
            rate, bare_rate = n / wall, n / bare
            rows.append(
                common.Row(
                    f"2. Send overhead @ 0 ms, C={c}",
                    f"{rate:.0f} msg/s",
                    f"bare client loop {bare_rate:.0f} msg/s",
                    f"{rate / bare_rate:.3f}x",
                    f"≥ {TARGET:.0f} msg/s",
                    rate >= TARGET,
                    f"{wall / n * 1000:.2f} ms a message. CPU ms a message: {meter.per(n)}.",
                )
            )
        rows.append(in_processes(sandbox, n, *size["processes"], first_phone=len(rows) * n))
    return rows


def in_processes(sandbox, n: int, processes: int, threads: int, *, first_phone: int) -> common.Row:
    """`processes` send_blasts commands of `threads` senders each, started together on one blast."""
    from django.db.models import Max, Min

    from blasts.models import BlastRecipient

    start = time.perf_counter()
    common.send_bare(sandbox.client(), n, processes * threads)
    bare = time.perf_counter() - start
    blast = common.queued_blast(n, first_phone=first_phone)
    common.say(f"send_blasts: {n} messages, {processes} processes of {threads} senders, gateway latency 0")
    env = os.environ | {"WSAPME_BASE_URL": sandbox.url}
    command = [sys.executable, "manage.py", "send_blasts", "--concurrency", str(threads)]
    procs: list[subprocess.Popen] = []
    meter = common.CpuMeter(
        {"sender processes": lambda: [p.pid for p in procs], "sandbox": lambda: [sandbox.proc.pid]}
    )
    # Their log lines go to a file: a pipe read only after the other command ends would block this one.
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        procs += [
            subprocess.Popen(command, cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            for _ in range(processes)
        ]
        meter.start()
        codes = [proc.wait() for proc in procs]
        wall = time.perf_counter() - start
        meter.stop()
        log.seek(0)
        common.check(codes == [0] * processes, f"send_blasts exited {codes}: {log.read()[-2000:]!r}")
    sent = BlastRecipient.objects.filter(blast=blast, status=BlastRecipient.Status.PENDING)
    common.check(sent.count() == n, f"{sent.count()} of {n} sent by {processes} send_blasts processes")
    span = sent.aggregate(first=Min("sent_at"), last=Max("sent_at"))
    sending = (span["last"] - span["first"]).total_seconds()  # without the commands' start-up
    rate, bare_rate = (n - 1) / sending, n / bare
    return common.Row(
        f"2. Send overhead @ 0 ms, {processes} processes x {threads}",
        f"{rate:.0f} msg/s",
        f"bare client loop {bare_rate:.0f} msg/s",
        f"{rate / bare_rate:.3f}x",
        f"≥ {TARGET:.0f} msg/s",
        rate >= TARGET,
        f"Rate from the first send to the last ({sending:.2f} s); with the commands' start-up "
        f"{n / wall:.0f} msg/s. CPU ms a message (start-up included): {meter.per(n)}.",
    )


if __name__ == "__main__":
    common.main(__doc__, bench)
