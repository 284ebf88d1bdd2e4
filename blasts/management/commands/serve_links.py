import os

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

APP = "blasts.tracking.link_server:application"


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError
    return host.strip("[]"), int(port)


class Command(BaseCommand):
    help = (
        "Serve the tracked links' redirect (/l/<code>) on a server of its own, for more clicks a second "
        "than the web takes (PostgreSQL only). Route PUBLIC_BASE_URL's /l/ to it. SIGTERM stops it "
        "once the requests in flight are answered."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--bind", default=settings.LINKS_BIND, help="host:port to listen on (default LINKS_BIND)."
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=settings.LINKS_WORKERS or os.cpu_count() or 1,
            help="Processes (default LINKS_WORKERS, else one a core).",
        )

    def handle(self, *args, bind, workers, **options):
        if connection.vendor != "postgresql":
            raise CommandError(
                "serve_links needs PostgreSQL; on SQLite the web serves /l/ itself (blastsite/wsgi.py)."
            )
        try:
            host, port = _address(bind)
        except ValueError:
            raise CommandError(f"--bind must be host:port, such as 127.0.0.1:8001, not {bind!r}.") from None
        if workers < 1:
            raise CommandError("--workers must be 1 or more.")
        if not settings.PUBLIC_BASE_URL:
            self.stderr.write(
                "PUBLIC_BASE_URL is empty: messages carry their links as written, so no click comes here."
            )
        self.stdout.write(f"Serving /l/ on http://{host}:{port} ({workers} worker{'s' * (workers > 1)}).")
        uvicorn.run(
            APP,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            server_header=False,
            proxy_headers=False,  # it reads no address
            log_level="warning",
            timeout_graceful_shutdown=20,
        )
