import signal
import socket
import threading
from collections import Counter
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError

from ...gateway.client import get_client
from ...models import Blast, Heartbeat
from ...services import worker_heartbeat
from ...tracking.events import webhook_events_apply_waiting
from ...tracking.polling import poll_due, poll_pass, poll_summary


@contextmanager
def stop_on_signals():
    """An event that SIGTERM and Ctrl-C set, so a run stops after the question in flight; then the old handlers."""
    stop = threading.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in signals}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Command(BaseCommand):
    help = (
        "Ask WSAPME for the status of messages due a check and of those people asked to check now, then "
        "exit (cron); --loop keeps running as the poller; --blast checks one blast here and now."
    )

    def add_arguments(self, parser):
        parser.add_argument("--blast", type=int, help="Poll this blast's unfinished messages now, here.")
        parser.add_argument(
            "--concurrency", type=int, help="Checks in flight at once (default POLL_CONCURRENCY)."
        )
        parser.add_argument(
            "--loop", action="store_true", help="Keep running: the poller. SIGTERM or Ctrl-C stops it."
        )
        parser.add_argument(
            "--every", type=float, default=5.0, help="With --loop: seconds between runs (default 5)."
        )
        parser.add_argument("--passes", type=int, help="With --loop: stop after this many runs.")

    def handle(self, *args, blast, concurrency, loop, every, passes, **options):
        if blast is not None:
            if loop:
                raise CommandError("--blast checks one blast once: leave out --loop.")
            early_acks = webhook_events_apply_waiting()
            try:
                tally = poll_due(client=get_client(), blast_id=blast, concurrency=concurrency)
            except Blast.DoesNotExist:
                raise CommandError(f"There is no blast {blast}.") from None
            self.stdout.write(poll_summary(tally, early_acks))
            return
        if passes is not None and passes < 1:
            raise CommandError("--passes takes a number of runs, 1 or more.")
        client, total, total_acks, runs = get_client(), Counter(), 0, 0
        with stop_on_signals() as stop:
            while True:
                tally, early_acks = poll_pass(client=client, concurrency=concurrency, stop=stop)
                worker_heartbeat(
                    role=Heartbeat.Role.POLLER,
                    name=f"poll_statuses@{socket.gethostname()}",
                    note=poll_summary(tally, early_acks),
                )
                total, total_acks, runs = total + tally, total_acks + early_acks, runs + 1
                if not loop or runs == passes or stop.wait(every):
                    break
        self.stdout.write(poll_summary(total, total_acks))
