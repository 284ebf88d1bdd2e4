import socket

from django.core.management.base import BaseCommand, CommandError

from blasts.models import Blast, Heartbeat
from blasts.services import worker_heartbeat
from blasts.tracking import poll_due, webhook_events_apply_waiting
from blasts.wsapme import get_client


class Command(BaseCommand):
    help = "For cron: ask WSAPME for the status of messages that are due a check (or all unfinished ones of --blast)."

    def add_arguments(self, parser):
        parser.add_argument("--blast", type=int, help="Poll this blast's unfinished messages now.")
        parser.add_argument(
            "--concurrency", type=int, help="Checks in flight at once (default POLL_CONCURRENCY)."
        )

    def handle(self, *args, blast, concurrency, **options):
        late_acks = webhook_events_apply_waiting()
        try:
            tally = poll_due(client=get_client(), blast_id=blast, concurrency=concurrency)
        except Blast.DoesNotExist:
            raise CommandError(f"There is no blast {blast}.") from None
        summary = (
            f"checked {sum(tally.values())}, updated {tally['updated']}, unknown {tally['unknown']}, "
            f"errors {tally['error']}; early acks matched {late_acks}"
        )
        if blast is None:  # the scheduled run, not a one-off check of one blast
            worker_heartbeat(
                role=Heartbeat.Role.POLLER, name=f"poll_statuses@{socket.gethostname()}", note=summary
            )
        self.stdout.write(summary)
