from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from ...services import records_prune


class Command(BaseCommand):
    help = (
        "For cron: delete raw webhook events and status history older than --days (funnel counts stay), "
        "and audit rows older than AUDIT_KEEP_DAYS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=float, required=True, help="Keep this many days (at least 7).")

    def handle(self, *args, days, **options):
        if days < 7:
            raise CommandError("--days must be at least 7: recent events still explain today's funnels.")
        deleted = records_prune(older_than=timedelta(days=days))
        self.stdout.write(", ".join(f"{n} {name}" for name, n in deleted.items()) + " deleted")
