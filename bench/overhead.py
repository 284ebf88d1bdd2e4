"""2. Send overhead: sandbox latency 0, so all that is left is the ledger's own work per message
(claim, mark SENDING, send, commit the outcome, history rows).

Messages per second through `send_due` with C senders, against a bare loop of the same client
calls with the same C threads and no database, in the same run.
"""

import os
import time

from bench import common

FULL = {"messages": 3000, "concurrency": (1, 4)}
SMOKE = {"messages": 100, "concurrency": (1, 4)}
TARGET = 300.0  # messages per second


def bench(smoke: bool) -> list[common.Row]:
    from blasts.models import BlastRecipient
    from blasts.sending import send_due

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
    return rows


if __name__ == "__main__":
    common.main(__doc__, bench)
