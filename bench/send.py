"""1. Send: N recipients, sandbox latency 200 ms, C senders, pacing off.

Wall time of `send_due` against the ideal N x latency / C, and against the roadmap's first
strategy in the same run: one loop over the recipients that sends through the same client and
stores each message id.
"""

import math
import time

from bench import common

FULL = {"recipients": 500, "latency": 0.2, "concurrency": 16}
SMOKE = {"recipients": 20, "latency": 0.01, "concurrency": 4}
TARGET = 1.10  # x the ideal


def naive_loop(client, blast) -> None:
    """The roadmap's Phase 3: loop through the recipients, send each, store its message id."""
    from django.utils import timezone

    from blasts.models import BlastRecipient
    from blasts.recipients import message_render

    for recipient in BlastRecipient.objects.filter(blast=blast).order_by("id"):
        result = client.send(
            device=blast.device, to=recipient.phone, message=message_render(blast.message, recipient)
        )
        BlastRecipient.objects.filter(pk=recipient.pk).update(
            status=BlastRecipient.Status.PENDING,
            message_id=result.message_id,
            send_response=result.raw,
            sent_at=timezone.now(),
        )


def bench(smoke: bool) -> list[common.Row]:
    from django.conf import settings

    from blasts.models import BlastRecipient
    from blasts.sending.worker import send_due

    size = SMOKE if smoke else FULL
    n, latency, c = size["recipients"], size["latency"], size["concurrency"]
    with common.SandboxProcess(latency=latency) as sandbox:
        client = sandbox.client()
        rtt = common.round_trip(client)
        blast = common.queued_blast(n)
        common.say(f"send_due: {n} recipients, {c} senders, gateway latency {latency * 1000:g} ms")
        with common.DiscardedConnections() as discarded:
            start = time.perf_counter()
            tally = send_due(client=client, blast_id=blast.pk, concurrency=c)
            wall = time.perf_counter() - start
        naive_blast = common.queued_blast(n, first_phone=n)
        common.say(f"naive loop: {n} sends one after another (about {n * rtt:.0f} s)")
        start = time.perf_counter()
        naive_loop(client, naive_blast)
        naive = time.perf_counter() - start
        accepted = [call for call in sandbox.calls() if call["outcome"] == "sent"]

    pending = BlastRecipient.objects.filter(status=BlastRecipient.Status.PENDING)
    common.check(tally["sent"] == n, f"send_due sent {dict(tally)}, not {n}")
    common.check(pending.filter(blast=blast).count() == n, "not every recipient of the blast is PENDING")
    common.check(pending.filter(blast=naive_blast).count() == n, "the naive loop did not send everyone")
    common.check(len(accepted) == 2 * n + 10, f"the gateway took {len(accepted)} sends, not {2 * n + 10}")

    ideal = n * latency / c
    sent_at = sorted(pending.filter(blast=blast).values_list("sent_at", flat=True))
    first_90 = (sent_at[int(0.9 * n) - 1] - sent_at[0]).total_seconds()
    last_10 = (sent_at[-1] - sent_at[int(0.9 * n) - 1]).total_seconds()
    per_send = wall * c / n  # each sender's seconds per message, its gateway wait included
    notes = (
        f"Gateway round trip measured {rtt * 1000:.1f} ms (median of 10); ideal from it "
        f"{n * rtt / c:.2f} s (ratio {wall / (n * rtt / c):.3f}). Each sender spent {per_send * 1000:.1f} ms "
        f"per message, {max(per_send - rtt, 0) * 1000:.1f} ms of it not waiting for the gateway "
        f"(ledger, claims and idle senders at the end). The first 90 % went out in {first_90:.2f} s, the "
        f"last 10 % took {last_10:.2f} s more (ideal {0.1 * n * latency / c:.2f} s): each of the {c} senders claims "
        f"ceil(SEND_BATCH_SIZE / {c}) = {math.ceil(settings.SEND_BATCH_SIZE / c)} at a time. The client's connection pool discarded "
        f"{discarded.count} connections ({c} senders share it). Gateway calls: {len(accepted)} accepted, "
        f"no recipient sent twice."
    )
    return [
        common.Row(
            f"1. Send {n} @ {latency * 1000:g} ms, C={c}, pacing off",
            f"{wall:.2f} s",
            f"ideal Nxlatency/C {ideal:.2f} s",
            f"{wall / ideal:.3f}x",
            f"≤ {TARGET:.2f}x ideal",
            wall / ideal <= TARGET,
            notes,
        ),
        common.Row(
            "1. Send, against the naive sequential loop",
            f"{wall:.2f} s",
            f"naive loop {naive:.2f} s",
            f"{wall / naive:.3f}x ({naive / wall:.1f}x faster)",
            "—",
            None,
            f"The roadmap's loop: one send after another through the same client, storing each id "
            f"({naive / n * 1000:.1f} ms per message).",
        ),
    ]


if __name__ == "__main__":
    common.main(__doc__, bench)
