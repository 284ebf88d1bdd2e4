import contextlib
import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ...gateway.sandbox import Sandbox
from ...gateway.sandbox_messages import SandboxConfig


class Command(BaseCommand):
    help = "Run the local WSAPME sandbox gateway: the WSAPME API on loopback, and no real WhatsApp message."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.WSAPME_SANDBOX_PORT)
        parser.add_argument("--seed", type=int, default=0, help="Same seed, same progression.")
        parser.add_argument("--latency", type=float, default=0.0, help="Seconds added to every API answer.")
        parser.add_argument("--webhook-url", default=settings.WSAPME_SANDBOX_WEBHOOK_URL)
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KNOB=VALUE",
            help="Any other knob of blasts.gateway.sandbox_messages.SandboxConfig, value as JSON: --set p_reply=0.5",
        )

    def handle(self, *args, host, port, seed, latency, webhook_url, set, **options):
        secrets = settings.WSAPME_WEBHOOK_SECRETS
        config = SandboxConfig(
            token=settings.WSAPME_SANDBOX_TOKEN,
            seed=seed,
            latency=latency,
            webhook_url=webhook_url,
            webhook_headers={"X-Webhook-Token": secrets[0]}
            if secrets
            else {},  # authenticates like WSAPME's URL
        )
        try:
            config.update(dict(_knob(item) for item in set))
        except (ValueError, TypeError) as exc:
            raise CommandError(f"--set: {exc}") from None
        try:
            sandbox = Sandbox(config, host=host, port=port)
        except OSError as exc:
            raise CommandError(f"Cannot listen on {host}:{port}: {exc.strerror}") from None
        target = webhook_url.split("?")[0] or "nowhere"
        self.stdout.write(
            f"WSAPME sandbox on {sandbox.url}, webhooks to {target}. No real WhatsApp message is sent."
        )
        with contextlib.suppress(KeyboardInterrupt):
            sandbox.serve_forever()


def _knob(item: str) -> tuple[str, object]:
    key, sep, raw = item.partition("=")
    if not sep:
        raise ValueError(f"{item!r} is not KNOB=VALUE")
    try:
        return key.strip(), json.loads(raw)
    except ValueError:
        return key.strip(), raw
