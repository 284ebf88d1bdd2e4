import itertools
import json
import socket
import threading
from collections import Counter
from types import SimpleNamespace
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import responses
from django.db import connection, connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from blasts.gateway.sandbox import Sandbox
from blasts.gateway.sandbox_messages import SandboxConfig
from blasts.models import BlastRecipient, StatusHistory, WebhookEvent
from blasts.recipients import ParsedRecipients, parse_recipients
from blasts.services import blast_create, recipient_advance
from blasts.tracking.applier import Waker, applier_loop, webhook_events_apply
from blasts.tracking.link_views import link_application

# Each example makes its own rows, so sharing the test's transaction is safe.
hypothesis_settings.register_profile(
    "blasts", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
hypothesis_settings.load_profile("blasts")

_phone_numbers = itertools.count(1_000_000)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    """The test database, as a server process's DATABASE_URL."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def pytest_collection_modifyitems(config, items):
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: run with DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def new_phone() -> str:
    """A valid, never-repeated Malaysian mobile number."""
    return f"+6012{next(_phone_numbers):07d}"


def make_blast(recipients=3, *, tag="Launch", follow_up_stage="Initial", status=None, **fields):
    """A blast through the real service, optionally advanced to `status` (with history, as sending would)."""
    rows = [(f"Line {i}", new_phone(), f"Name {i}") for i in range(1, recipients + 1)]
    parsed = parse_recipients(rows) if recipients else ParsedRecipients()
    blast = blast_create(
        tag=tag,
        follow_up_stage=follow_up_stage,
        message=fields.pop("message", "Hello {name}"),
        device=fields.pop("device", "5850"),
        recipients=parsed,
        **fields,
    ).blast
    if status is not None:
        for recipient in blast.recipients.all():
            recipient_advance(recipient=recipient, status=status, source=StatusHistory.Source.SEND)
    return blast


@pytest.fixture
def blast_factory(db):
    return make_blast


@pytest.fixture
def recipient(db) -> BlastRecipient:
    return make_blast(1).recipients.get()


@pytest.fixture
def wsapme_sandbox():
    """The sandbox gateway on a free port, with a fast timeline (tenths of a second); stopped after."""
    config = SandboxConfig(server_ack_after=0.05, delivered_after=0.05, read_after=0.05, reply_after=0.05)
    sandbox = Sandbox(config).start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def gateway(db, settings, wsapme_sandbox):
    """The sandbox as our gateway, with no pacing and short timeouts so tests run in seconds."""
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, wsapme_sandbox.url
    settings.WSAPME_READ_TIMEOUT = 0.5
    settings.SEND_RATE_PER_MINUTE = 0
    settings.SEND_BACKOFF_CAP_SECONDS = 0.1
    return wsapme_sandbox


@pytest.fixture
def mocked_gateway(settings):
    """WSAPME mocked: `answers[message_id]` is what getMessageStatus says; `calls` counts the asks."""
    settings.WSAPME_BASE_URL, settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX = (
        "https://wsapme.test",
        "t0k",
        False,
    )
    settings.POLL_CONCURRENCY, settings.POLL_RATE_PER_SECOND = 1, 0
    state = SimpleNamespace(answers={}, calls=Counter(), lock=threading.Lock())

    def answer(request):
        message_id = json.loads(request.body)["messageId"]
        with state.lock:
            state.calls[message_id] += 1
        found = state.answers.get(message_id, {"success": False, "data": {}})
        return found if isinstance(found, tuple) else (200, {}, json.dumps(found))

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, "https://wsapme.test/v1/getMessageStatus", callback=answer)
        yield state


def apply_events() -> list[str]:
    """What `manage.py apply_events` does: apply every stored event; the states of those it applied, in order."""
    before = set(WebhookEvent.objects.exclude(state=WebhookEvent.State.RECEIVED).values_list("pk", flat=True))
    while sum(webhook_events_apply().values()):
        pass
    return list(WebhookEvent.objects.exclude(pk__in=before).order_by("pk").values_list("state", flat=True))


@pytest.fixture
def applier(transactional_db):
    """`apply_events --loop` in a thread (its own connection), for tests with a live server; stopped after."""
    from django.db import connections

    stop, waker = threading.Event(), Waker(0.05)

    def run():
        try:
            applier_loop(stop=stop, waker=waker, limit=100, name="test-applier", forever=True)
        finally:
            waker.close()
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join(timeout=10)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def our_links(settings, transactional_db):
    """Our /l/ redirect (what blastsite.wsgi hands /l/ to) on a free port, as PUBLIC_BASE_URL."""
    httpd = make_server("127.0.0.1", 0, link_application, handler_class=QuietHandler)

    def serve():
        try:
            httpd.serve_forever(poll_interval=0.05)
        finally:
            connections.close_all()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    settings.PUBLIC_BASE_URL = f"http://127.0.0.1:{httpd.server_address[1]}"
    settings.LINK_PREVIEW_SECONDS = 0  # the sandbox clicks within a second: only the user agent tells
    yield httpd
    httpd.shutdown()
    thread.join(timeout=5)
