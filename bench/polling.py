"""5. Polling: N messages due a status check, gateway latency 100 ms, C checks in flight.

Wall time of `poll_due` (what `poll_statuses` runs) against the ideal N x latency / C. The
per-device limit (POLL_RATE_PER_SECOND) is off, as pacing is for sending: at its default of 10 a
second, one device's 10,000 checks would take 1,000 s whatever the concurrency.
"""

import time

from bench import common

FULL = {"messages": 10000, "latency": 0.1, "concurrency": 16}
SMOKE = {"messages": 100, "latency": 0.01, "concurrency": 4}
TARGET = 1.15  # x the ideal


def seed(message_ids: list[str]):
    """A sent blast whose recipients, one per message id, are all due their first status check."""
    return common.sent_blast(
        "Polling",
        "unnest(%s::text[]) WITH ORDINALITY AS t(message_id, g)",
        (message_ids,),
        message_id="t.message_id",
        next_poll_at="now() - interval '1 minute'",
    )


def bench(smoke: bool) -> list[common.Row]:
    from blasts.models import BlastRecipient
    from blasts.tracking.polling import poll_due

    size = SMOKE if smoke else FULL
    n, latency, c = size["messages"], size["latency"], size["concurrency"]
    with common.SandboxProcess(latency=0) as sandbox:
        client = sandbox.client()
        common.say(f"the gateway takes {n} messages (latency 0), so it knows their statuses")
        ids = common.send_bare(client, n, 8)
        common.check(all(ids), "the sandbox did not take every message")
        seed(ids)
        sandbox.configure(latency=latency)
        rtt = common.round_trip(client)
        common.say(f"poll_due: {n} checks due, {c} in flight, gateway latency {latency * 1000:g} ms")
        with common.DiscardedConnections() as discarded:
            start = time.perf_counter()
            tally = poll_due(client=client, concurrency=c)
            wall = time.perf_counter() - start

    checked = sum(tally.values())
    moved = BlastRecipient.objects.filter(polls=1).count()
    common.check(checked == n and tally["error"] == 0, f"{n} due, but the checks went {dict(tally)}")
    common.check(moved == n, f"{moved} of {n} recipients moved to their next poll")
    ideal = n * latency / c
    return [
        common.Row(
            f"5. Polling {n} due @ {latency * 1000:g} ms, C={c}",
            f"{wall:.2f} s",
            f"ideal Nxlatency/C {ideal:.2f} s",
            f"{wall / ideal:.3f}x",
            f"≤ {TARGET:.2f}x ideal",
            wall / ideal <= TARGET,
            f"Checks: {tally['updated']} updated a status, {tally['unchanged']} unchanged, {tally['unknown']} "
            f"unknown, {tally['error']} errors. Gateway round trip measured {rtt * 1000:.1f} ms (ideal from it "
            f"{n * rtt / c:.2f} s, ratio {wall / (n * rtt / c):.3f}). The client's connection pool "
            f"discarded {discarded.count} connections ({c} threads share it).",
        )
    ]


if __name__ == "__main__":
    common.main(__doc__, bench)
