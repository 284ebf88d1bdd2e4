import signal
import threading

from django.core.management.base import BaseCommand

from ...gateway.client import get_client
from ...sending.worker import send_due


class Command(BaseCommand):
    help = "Send every due blast (scheduled ones whose time has come) and exit; --loop keeps running as the worker."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="Keep running: the sender worker.")
        parser.add_argument("--concurrency", type=int, default=1, help="Sends in flight at once (threads).")

    def handle(self, *args, loop, concurrency, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())  # finish the send in flight, then stop
        tally = send_due(client=get_client(), loop=loop, concurrency=max(concurrency, 1), stop=stop)
        self.stdout.write(
            f"sent {tally['sent']}, failed {tally['failed']}, unknown {tally['unknown']}, "
            f"skipped {tally['skipped']}, to retry {tally['requeued']}"
        )
