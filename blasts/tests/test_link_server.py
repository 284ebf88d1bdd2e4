"""manage.py serve_links: the redirect on a server of its own answers every question as the web does
(test_links.py asks the web the rest), and keeps the same rows."""

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import uvicorn
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from blasts.models import BlastRecipient, Click, Link, StatusHistory
from blasts.tracking import link_server
from blasts.tracking.link_server import LinkServer

from .conftest import database_url, free_port
from .test_links import BROWSER, call, sent_recipient, tracked

Status = BlastRecipient.Status
pytestmark = pytest.mark.postgres
WHATSAPP = "WhatsApp/2.24.12.78 A"


@pytest.fixture
def links(transactional_db):
    """LinkServer under uvicorn on a free port, in a thread: ask(path, agent, method) → (status, headers, body)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            LinkServer(size=2),
            host="127.0.0.1",
            port=port,
            lifespan="on",
            server_header=False,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)

    def ask(path: str, agent: str = BROWSER, method: str = "GET") -> tuple[int, dict, bytes]:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        client.request(method, path, headers={"User-Agent": agent.encode()})  # as UTF-8 bytes
        response = client.getresponse()
        answer = response.status, dict(response.getheaders()), response.read()
        client.close()
        return answer

    yield ask
    server.should_exit = True
    thread.join(timeout=10)


def kept(code: str) -> list[tuple]:
    """What a request for `code` left: its clicks, its recipient's status and click time, its history."""
    recipient = Link.objects.get(code=code).recipient
    return [
        *Click.objects.filter(link_id=code).values_list("preview", "user_agent"),
        (recipient.status, recipient.clicked_at is not None),
        *StatusHistory.objects.filter(recipient=recipient, source=StatusHistory.Source.CLICK).values_list(
            "from_status", "to_status"
        ),
    ]


def same_answer(links, path_of, agent=BROWSER, method="GET", status=Status.DELIVERY_ACK, url=None):
    """Two recipients alike, one asked through the web, one through the link server: the answers (but
    for the code in them) and what each kept must be the same."""
    codes = [tracked(sent_recipient(status), url or "https://shop.example.com/sale") for _ in range(2)]
    web = call(path_of(codes[0]), agent=agent.encode().decode("latin-1"), method=method)  # WSGI's str
    ours = links(path_of(codes[1]), agent=agent, method=method)
    headers = {name: value for name, value in ours[1].items() if name not in ("date",)}
    assert (ours[0], headers, ours[2]) == (web[0], {k.lower(): v for k, v in web[1].items()}, web[2])
    assert kept(codes[0]) == kept(codes[1])
    return ours


@pytest.mark.parametrize(
    "agent",
    [BROWSER, WHATSAPP, "Mozilla/5.0 (Linux; Android 14) Chrome/126.0 Mobile 📱 Pelayar Ñandú", ""],
)
def test_a_click_is_answered_and_kept_as_the_web_does(links, agent):
    status, headers, body = same_answer(links, lambda code: f"/l/{code}", agent=agent)
    assert (status, headers["location"], headers["cache-control"], body) == (
        302,
        "https://shop.example.com/sale",
        "no-store",
        b"",
    )


def test_a_first_click_moves_a_delivered_recipient_to_read_through_the_ledger(links):
    code = tracked(sent_recipient(Status.DELIVERY_ACK))
    for _ in range(2):
        assert links(f"/l/{code}")[0] == 302
    assert kept(code) == [
        (False, BROWSER),
        (False, BROWSER),
        (Status.READ_ACK, True),
        (Status.DELIVERY_ACK, Status.READ_ACK),
    ]


def test_a_non_ascii_url_is_sent_encoded(links):
    _, headers, _ = same_answer(links, lambda code: f"/l/{code}", url="https://shop.example.com/kedai/ê")
    assert headers["location"] == "https://shop.example.com/kedai/%C3%AA"


def test_head_is_answered_without_a_body_and_other_methods_are_refused(links):
    assert same_answer(links, lambda code: f"/l/{code}", method="HEAD")[0] == 302
    status, headers, _ = same_answer(links, lambda code: f"/l/{code}", method="POST")
    assert (status, headers["allow"]) == (405, "GET, HEAD")


@pytest.mark.parametrize("path", ["/l/NoSuchCode0000aa", "/l/", "/l/has.dot", "/l/" + "x" * 23])
def test_an_unknown_code_is_a_404_and_writes_nothing(links, path):
    tracked(sent_recipient())
    before = (Click.objects.count(), StatusHistory.objects.count())
    assert links(path)[0::2] == call(path)[0::2] == (404, b"Not found\n")
    assert (Click.objects.count(), StatusHistory.objects.count()) == before


def test_it_serves_nothing_but_links(links):
    assert links("/admin/")[0::2] == links("/api/blasts")[0::2] == (404, b"Not found\n")


def test_an_expired_link_shows_the_same_page(links, settings):
    settings.LINK_EXPIRY_DAYS = 90
    codes = [tracked(sent_recipient()) for _ in range(2)]
    Link.objects.update(created_at=timezone.now() - timedelta(days=91))
    web, ours = call(f"/l/{codes[0]}"), links(f"/l/{codes[1]}")
    assert (ours[0], ours[2]) == (web[0], web[2]) and ours[0] == 410
    assert not Click.objects.exists()


def test_connections_the_database_dropped_are_replaced(links):
    code = tracked(sent_recipient())
    assert links(f"/l/{code}")[0] == 302
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert links(f"/l/{code}")[0] == 302
    assert Click.objects.filter(link_id=code).count() == 2


def test_a_database_it_cannot_reach_is_a_503_not_a_traceback(links, monkeypatch, caplog):
    code = tracked(sent_recipient())
    unreachable = link_server._connection_params() | {"host": "127.0.0.1", "port": free_port()}
    monkeypatch.setattr(link_server, "_connection_params", lambda: unreachable)
    status, headers, body = links(f"/l/{code}")
    assert (status, headers["retry-after"], body) == (503, "5", b"Try again shortly\n")
    assert "the database cannot be reached" in caplog.text
    assert unreachable.get("password", "\0") not in caplog.text


# The command


@pytest.mark.parametrize("bind", ["8001", "localhost:", "127.0.0.1:99999", ":80"])
def test_a_bad_address_is_one_clear_line(bind):
    with pytest.raises(CommandError, match="--bind must be host:port"):
        call_command("serve_links", bind=bind)


def test_serve_links_serves_the_redirect_until_sigterm(links):
    code = tracked(sent_recipient())
    port = free_port()
    env = os.environ | {"DATABASE_URL": database_url()}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve_links", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                client.request("GET", f"/l/{code}", headers={"User-Agent": BROWSER})
                response = client.getresponse()
                break
            except ConnectionRefusedError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.1)
        assert (response.status, response.getheader("Location")) == (302, "https://shop.example.com/sale")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    # uvicorn stops gracefully, then exits by the signal it caught, as systemd counts a clean stop.
    assert proc.returncode == -signal.SIGTERM, output
    assert "Traceback" not in output
    assert f"Serving /l/ on http://127.0.0.1:{port} (1 worker)." in output
    assert Click.objects.filter(link_id=code).count() == 1
