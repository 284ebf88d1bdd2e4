import os
import socket

from django.core.management.base import BaseCommand, CommandError
from django.utils import dateparse, timezone

from ...tracking.applier import BATCH_SIZE, Waker, applier_loop, applier_summary, webhook_events_replay
from .poll_statuses import stop_on_signals


def _moment(text: str):
    """--since as an aware time: a date (its midnight) or a date and time, in TIME_ZONE unless it says."""
    moment = dateparse.parse_datetime(text)
    if moment is None and (day := dateparse.parse_date(text)) is not None:
        moment = timezone.datetime.combine(day, timezone.datetime.min.time())
    if moment is None:
        raise ValueError
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


class Command(BaseCommand):
    help = (
        "Apply the webhook events the webhook stored, through the ledger, in batches, then exit; --loop "
        "keeps running as the applier; --replay --since applies again what did not apply since then."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--loop", action="store_true", help="Keep running: the applier. SIGTERM or Ctrl-C stops it."
        )
        parser.add_argument(
            "--batch",
            type=int,
            default=BATCH_SIZE,
            help=f"Events applied in one transaction (default {BATCH_SIZE}).",
        )
        parser.add_argument(
            "--every",
            type=float,
            default=1.0,
            help="With --loop: seconds between looks when not woken (default 1).",
        )
        parser.add_argument(
            "--replay",
            action="store_true",
            help="First queue again the events received since --since that did not apply (after a fix).",
        )
        parser.add_argument("--since", help="With --replay: a date or date and time, e.g. 2026-12-01T09:00.")

    def handle(self, *args, loop, batch, every, replay, since, **options):
        if batch < 1:
            raise CommandError("--batch takes a number of events, 1 or more.")
        if every <= 0:
            raise CommandError("--every takes a number of seconds above 0.")
        if replay != bool(since):
            raise CommandError("--replay and --since go together: --replay --since 2026-12-01T09:00.")
        if replay:
            try:
                moment = _moment(since)
            except ValueError:
                raise CommandError(
                    f"--since {since!r} is not a date or date and time (2026-12-01T09:00)."
                ) from None
            self.stdout.write(
                f"Queued {webhook_events_replay(since=moment)} events received since {moment:%Y-%m-%d %H:%M %Z} again."
            )
        waker = Waker(every)
        if loop:
            self.stdout.write(f"Applying webhook events in batches of {batch}, {waker.how}.")
        try:
            with stop_on_signals() as stop:
                name = f"apply_events@{socket.gethostname()}:{os.getpid()}"
                total = applier_loop(stop=stop, waker=waker, limit=batch, name=name, forever=loop)
        finally:
            waker.close()
        self.stdout.write(applier_summary(total))
