"""6. Memory: peak RSS of `manage.py send_blast` sending a 100,000-recipient blast (sandbox latency 0),
against the same command sending a 1,000-recipient blast in the same run.

Each command runs in a process of its own; its peak RSS is the kernel's (wait4's ru_maxrss), and
its RSS is sampled as it goes, so growth with the blast's size shows.
"""

import os
import sys

from bench import common

FULL = {"recipients": 100000, "small": 1000, "concurrency": 4}
SMOKE = {"recipients": 300, "small": 50, "concurrency": 4}
TARGET_MB = 200.0


def send_blast(sandbox_url: str, blast_id: int, concurrency: int) -> tuple[float, float, list[float]]:
    """Run send_blast in its own process: (peak RSS MB, seconds, RSS MB sampled every 5 s)."""
    env = os.environ | {"WSAPME_BASE_URL": sandbox_url}
    command = [sys.executable, "manage.py", "send_blast", str(blast_id), "--concurrency", str(concurrency)]
    seconds, peak, samples, _ = common.run_measured(command, env=env, every=5)
    return peak, seconds, samples


def bench(smoke: bool) -> list[common.Row]:
    from blasts.models import BlastRecipient

    size = SMOKE if smoke else FULL
    n, small, c = size["recipients"], size["small"], size["concurrency"]
    with common.SandboxProcess(latency=0) as sandbox:
        small_blast = common.queued_blast(small)
        common.say(f"send_blast: {small} recipients, --concurrency {c}")
        small_peak, _, _ = send_blast(sandbox.url, small_blast.pk, c)
        blast = common.queued_blast(n, first_phone=small)
        common.say(f"send_blast: {n} recipients, --concurrency {c}")
        peak, seconds, samples = send_blast(sandbox.url, blast.pk, c)

    for sent in (small_blast, blast):
        pending = BlastRecipient.objects.filter(blast=sent, status=BlastRecipient.Status.PENDING).count()
        total = sent.recipients.count()
        common.check(pending == total, f"blast {sent.pk}: {pending} of {total} sent")
    growth = (
        f"{samples[0]:.0f} MB after 5 s, {samples[-1]:.0f} MB at the last sample"
        if samples
        else "too short to sample"
    )
    return [
        common.Row(
            f"6. Memory: send_blast of {n:,} recipients",
            f"{peak:.1f} MB peak RSS",
            f"{small:,} recipients {small_peak:.1f} MB",
            f"{peak / small_peak:.3f}x",
            f"< {TARGET_MB:.0f} MB",
            peak < TARGET_MB,
            f"The command sent {n:,} in {seconds:.0f} s ({n / seconds:.0f} msg/s, --concurrency {c}); RSS {growth}.",
        )
    ]


if __name__ == "__main__":
    common.main(__doc__, bench)
