import signal
import threading

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from ...audit import Actor, Via
from ...gateway.client import get_client
from ...reporting.funnels import blast_funnel
from ...selectors import blast_eta
from ...sending.ledger import Done
from ...sending.worker import blast_prepare_send, send_due

DONE = {Done.SENT, Done.FAILED, Done.UNKNOWN, Done.SKIPPED}


class Command(BaseCommand):
    help = "Send one blast in the foreground, with a progress bar, and reconcile what happened."

    def add_arguments(self, parser):
        parser.add_argument("blast_id", type=int)
        parser.add_argument("--concurrency", type=int, default=1, help="Sends in flight at once (threads).")

    def handle(self, *args, blast_id, concurrency, **options):
        try:
            blast = blast_prepare_send(blast_id, by=Actor(None, Via.COMMAND))
        except ValidationError as exc:
            raise CommandError(exc.messages[0]) from None
        remaining = blast_funnel(blast.pk).not_sent
        eta = blast_eta(blast)
        if eta:
            self.stdout.write(
                f"Blast {blast.pk}: {remaining} to send, done by about {timezone.localtime(eta):%H:%M}"
            )
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        with tqdm(total=remaining, unit="msg", file=self.stderr, dynamic_ncols=True) as bar:
            send_due(
                client=get_client(),
                blast_id=blast.pk,
                concurrency=max(concurrency, 1),
                stop=stop,
                on_outcome=lambda outcome: bar.update(outcome in DONE),
            )
        blast.refresh_from_db()
        funnel = blast_funnel(blast.pk)
        line = (
            f"Blast {blast.pk} {blast.get_state_display().lower()}: intended {funnel.total} / sent {funnel.sent} / "
            f"failed {funnel.failed} / unknown {funnel.unknown} / skipped {funnel.skipped}"
        )
        self.stdout.write(line + (f" / not sent yet {funnel.not_sent}" if funnel.not_sent else ""))
        if blast.state == blast.State.PAUSED:
            raise CommandError(f"Blast {blast.pk} paused: {blast.state_reason}")
