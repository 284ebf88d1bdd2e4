"""Tracked links: each http(s) URL of a message goes out as PUBLIC_BASE_URL/l/<code> (pytest.ini:
https://go.example.com), and a request for it is kept as a Click and redirected.

The redirect is answered by blastsite.wsgi before Django's request handling, so these tests call
the WSGI application as a server does (Django's test client would not reach it).
"""

import base64
import re
import threading
from datetime import timedelta

import pytest
from django.core.checks import Warning as CheckWarning
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection, connections
from django.test import RequestFactory
from django.utils import timezone

from blasts.checks import public_base_url_check
from blasts.models import BlastRecipient, Click, Link, StatusHistory
from blasts.services import recipient_advance
from blasts.tracking.links import PREVIEW_AGENTS, link_click, links_render, message_urls
from blastsite.wsgi import application

from .conftest import make_blast

Status = BlastRecipient.Status
BROWSER = (
    "Mozilla/5.0 (Linux; Android 14; SM-A546E) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile"
)
BASE = "https://go.example.com/l/"


def call(path: str, agent: str = BROWSER, method: str = "GET") -> tuple[int, dict, bytes]:
    """(status code, headers, body) of the site's WSGI application for one request."""
    environ = RequestFactory().generic(method, path, HTTP_USER_AGENT=agent).environ
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer.update(status=int(status[:3]), headers=dict(headers))

    body = b"".join(application(environ, start_response))
    return answer["status"], answer["headers"], body


def sent_recipient(status=Status.DELIVERY_ACK, *, ago=timedelta(hours=1), blast=None) -> BlastRecipient:
    """A recipient of a blast with tracked links, at `status`, sent `ago` before now."""
    blast = blast or make_blast(1)
    recipient = blast.recipients.get()
    if status != Status.QUEUED:
        recipient_advance(recipient=recipient, status=status, source=StatusHistory.Source.SEND)
    BlastRecipient.objects.filter(pk=recipient.pk).update(sent_at=timezone.now() - ago)
    return BlastRecipient.objects.select_related("blast").get(pk=recipient.pk)


def tracked(recipient, url="https://shop.example.com/sale") -> str:
    """The code of the recipient's tracked link to `url`, made as the sender makes it."""
    return links_render(recipient, f"See {url}").removeprefix(f"See {BASE}")


def rows() -> dict[str, int]:
    return {
        "clicks": Click.objects.count(),
        "links": Link.objects.count(),
        "history": StatusHistory.objects.count(),
        "clicked": BlastRecipient.objects.filter(clicked_at__isnull=False).count(),
    }


# message_urls: what a URL is


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("Shop now: https://shop.example.com/sale.", ["https://shop.example.com/sale"]),
        ("https://a.example.com, https://b.example.com!", ["https://a.example.com", "https://b.example.com"]),
        ("Really? http://x.example.com/p?q=1&r=2#top?", ["http://x.example.com/p?q=1&r=2#top"]),
        ("(see https://x.example.com/a)", ["https://x.example.com/a"]),
        (
            "https://en.wikipedia.org/wiki/Mercury_(planet).",
            ["https://en.wikipedia.org/wiki/Mercury_(planet)"],
        ),
        (
            "*https://x.example.com/bold* and _https://y.example.com_",
            ["https://x.example.com/bold", "https://y.example.com"],
        ),
        ("<https://x.example.com/p>", ["https://x.example.com/p"]),
        ('"https://x.example.com/q"', ["https://x.example.com/q"]),
        ("HTTPS://X.EXAMPLE.COM/Up", ["HTTPS://X.EXAMPLE.COM/Up"]),
        (
            "Line one\nhttps://x.example.com/1\nhttps://x.example.com/2",
            ["https://x.example.com/1", "https://x.example.com/2"],
        ),
        ("Hello {first_name}, no link today. www.example.com is not one.", []),
        ("ftp://files.example.com and mailto:a@example.com", []),
        ("Just http:// and https://.", []),
    ],
)
def test_message_urls_leave_out_what_a_sentence_puts_around_them(text, urls):
    assert message_urls(text) == urls


# links_render: what goes out


def test_each_url_becomes_its_own_96_bit_code_and_the_rest_of_the_text_is_kept(
    db, django_assert_max_num_queries
):
    recipient = sent_recipient()
    text = "Hi! Sale: https://shop.example.com/a, and (https://shop.example.com/b). Bye"
    with django_assert_max_num_queries(2):  # insert the missing, read them back
        sent = links_render(recipient, text)
    links = list(recipient.links.order_by("position"))
    assert [link.url for link in links] == ["https://shop.example.com/a", "https://shop.example.com/b"]
    assert sent == f"Hi! Sale: {BASE}{links[0].code}, and ({BASE}{links[1].code}). Bye"
    for link in links:
        assert len(base64.urlsafe_b64decode(link.code + "==")) * 8 >= 96
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}", link.code)  # random: nothing of the person or the URL


def test_codes_differ_between_recipients_and_links(db):
    blast = make_blast(20)
    for recipient in blast.recipients.select_related("blast"):
        links_render(recipient, "https://a.example.com https://a.example.com")
    codes = list(Link.objects.values_list("code", flat=True))
    assert len(codes) == 40 and len(set(codes)) == 40


def test_a_retried_send_gets_the_same_codes(db):
    recipient = sent_recipient()
    text = "https://a.example.com and https://b.example.com"
    first = links_render(recipient, text)
    assert links_render(recipient, text) == first
    assert Link.objects.count() == 2


def test_a_text_without_url_costs_no_statement(db, django_assert_num_queries):
    recipient = sent_recipient()
    with django_assert_num_queries(0):
        assert links_render(recipient, "Hello, no link here.") == "Hello, no link here."


def test_links_go_out_as_written_when_the_blast_does_not_track_them(db):
    recipient = sent_recipient(blast=make_blast(1, track_links=False))
    assert links_render(recipient, "Go https://x.example.com") == "Go https://x.example.com"
    assert not Link.objects.exists()


def test_links_go_out_as_written_without_a_public_base_url(db, settings):
    settings.PUBLIC_BASE_URL = ""
    recipient = sent_recipient()
    assert links_render(recipient, "Go https://x.example.com") == "Go https://x.example.com"
    assert not Link.objects.exists()


# /l/<code>: the redirect


def test_a_click_redirects_to_the_original_and_is_kept(db):
    recipient = sent_recipient()
    code = tracked(recipient, "https://shop.example.com/sale?item=7")
    status, headers, body = call(f"/l/{code}")
    assert (status, headers["Location"], body) == (302, "https://shop.example.com/sale?item=7", b"")
    assert headers["Cache-Control"] == "no-store"
    click = Click.objects.get()
    assert (click.link_id, click.preview, click.user_agent) == (code, False, BROWSER)


def test_a_non_ascii_url_is_sent_encoded(db):
    code = tracked(sent_recipient(), "https://shop.example.com/kedai/ê")
    assert call(f"/l/{code}")[1]["Location"] == "https://shop.example.com/kedai/%C3%AA"


@pytest.mark.parametrize("path", ["/l/NoSuchCode0000aa", "/l/", "/l/has.dot", "/l/" + "x" * 23, "/l/a/b"])
def test_an_unknown_code_is_a_404_and_writes_nothing(db, path):
    tracked(sent_recipient())
    before = rows()
    status, headers, body = call(path)
    assert (status, headers["Content-Type"], body) == (404, "text/plain", b"Not found\n")
    assert rows() == before


def test_a_made_up_code_costs_no_query(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert call("/l/not-a-code!")[0] == 404


def test_an_expired_link_shows_a_page_that_says_so_and_keeps_no_click(db, settings):
    settings.LINK_EXPIRY_DAYS = 90
    code = tracked(sent_recipient())
    Link.objects.update(created_at=timezone.now() - timedelta(days=90, minutes=1))
    status, headers, body = call(f"/l/{code}")
    assert status == 410 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"This link has expired" in body and b"shop.example.com" not in body
    assert not Click.objects.exists()
    Link.objects.update(created_at=timezone.now() - timedelta(days=89))
    assert call(f"/l/{code}")[0] == 302


def test_only_get_and_head_are_answered(db):
    code = tracked(sent_recipient())
    assert call(f"/l/{code}", method="POST")[0] == 405
    status, _, body = call(f"/l/{code}", method="HEAD")
    assert (status, body) == (302, b"")
    assert Click.objects.count() == 1


# What a click counts for


@pytest.mark.parametrize(
    "agent",
    [
        "WhatsApp/2.24.12.78 A",
        "WhatsApp/2.23.20.0 i",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "TelegramBot (like TwitterBot)",
        "Twitterbot/1.0",
        "python-requests/2.32.3",
        "axios/1.7.2",
        "Go-http-client/1.1",
    ],
)
def test_a_link_preview_by_its_user_agent_is_kept_but_not_counted(db, agent):
    recipient = sent_recipient()
    code = tracked(recipient)
    assert call(f"/l/{code}", agent=agent)[0] == 302
    assert Click.objects.get().preview is True
    recipient.refresh_from_db()
    assert (recipient.clicked_at, recipient.status) == (None, Status.DELIVERY_ACK)
    assert not StatusHistory.objects.filter(source=StatusHistory.Source.CLICK).exists()


@pytest.mark.parametrize(
    "agent",
    [
        BROWSER,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 Chrome/125.0 Mobile [Pinterest/Android]",
        "",
    ],
)
def test_people_s_browsers_are_no_previews(agent):
    assert PREVIEW_AGENTS.search(agent) is None


def test_a_request_within_seconds_of_the_send_is_a_preview(db, settings):
    settings.LINK_PREVIEW_SECONDS = 10
    recipient = sent_recipient(ago=timedelta(seconds=3))
    code = tracked(recipient)
    assert call(f"/l/{code}")[0] == 302
    assert Click.objects.get().preview is True
    recipient.refresh_from_db()
    assert recipient.clicked_at is None


def test_before_sent_at_is_stored_the_link_s_making_is_the_send_time(db):
    """links_render runs right before the send, so a request in the seconds after it is a preview even
    when the sender has not stored sent_at yet (the gateway fetches the link while it sends)."""
    recipient = sent_recipient(Status.QUEUED)
    BlastRecipient.objects.filter(pk=recipient.pk).update(sent_at=None)
    code = tracked(recipient)
    call(f"/l/{code}")
    assert Click.objects.get().preview is True


def test_two_clicks_are_two_rows_and_count_once(db):
    recipient = sent_recipient(Status.READ_ACK)
    code = tracked(recipient)
    first, second = timezone.now(), timezone.now() + timedelta(minutes=5)
    link_click(code, BROWSER, first)
    link_click(code, BROWSER, second)
    assert list(Click.objects.values_list("at", "preview")) == [(first, False), (second, False)]
    recipient.refresh_from_db()
    assert recipient.clicked_at == first


def test_a_first_click_moves_a_delivered_recipient_to_read(db):
    recipient = sent_recipient(Status.DELIVERY_ACK)
    code = tracked(recipient)
    now = timezone.now()
    link_click(code, BROWSER, now)
    recipient.refresh_from_db()
    assert recipient.status == Status.READ_ACK and recipient.read_at == now
    history = StatusHistory.objects.get(source=StatusHistory.Source.CLICK)
    assert (history.from_status, history.to_status, history.occurred_at) == (
        Status.DELIVERY_ACK,
        Status.READ_ACK,
        now,
    )
    assert history.raw == {"link": code}
    link_click(code, BROWSER, now + timedelta(minutes=1))
    assert StatusHistory.objects.filter(source=StatusHistory.Source.CLICK).count() == 1


@pytest.mark.parametrize("status", [Status.PENDING, Status.SERVER_ACK, Status.FAILED, Status.UNKNOWN])
def test_a_click_proves_a_message_arrived(db, status):
    recipient = sent_recipient(Status.PENDING)
    BlastRecipient.objects.filter(pk=recipient.pk).update(status=status)  # an ERROR, an unanswered send
    link_click(tracked(recipient), BROWSER, timezone.now())
    recipient.refresh_from_db()
    assert recipient.status == Status.READ_ACK
    assert StatusHistory.objects.get(source=StatusHistory.Source.CLICK).from_status == status


@pytest.mark.parametrize("status", [Status.READ_ACK, Status.REPLIED, Status.CLOSED])
def test_a_click_leaves_a_read_replied_or_closed_recipient_where_it_is(db, status):
    recipient = sent_recipient(status)
    link_click(tracked(recipient), BROWSER, timezone.now())
    recipient.refresh_from_db()
    assert recipient.status == status and recipient.clicked_at is not None
    assert not StatusHistory.objects.filter(source=StatusHistory.Source.CLICK).exists()


def test_a_click_during_the_send_leaves_the_row_to_the_sender(db):
    """The sender holds a SENDING row until it stores PENDING: a click then (the gateway was slow to
    answer) counts as a click, and the status stays the sender's to write."""
    recipient = sent_recipient(Status.QUEUED)
    code = tracked(recipient)
    BlastRecipient.objects.filter(pk=recipient.pk).update(status=Status.SENDING)
    Link.objects.update(created_at=timezone.now() - timedelta(minutes=1))
    link_click(code, BROWSER, timezone.now())
    recipient.refresh_from_db()
    assert recipient.status == Status.SENDING and recipient.clicked_at is not None


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("agent", "kept"),
    [
        ("Mozilla/5.0 🚀 Ünïcødé 中文", "Mozilla/5.0 🚀 Ünïcødé 中文"),
        ("Mozilla/5.0\x00evil", "Mozilla/5.0\ufffdevil"),
        ("Mozilla/5.0 " + "x" * 300, ("Mozilla/5.0 " + "x" * 300)[:254] + "…"),
        ("Mozilla/5.0 \ud800", "Mozilla/5.0 \ufffd"),
    ],
)
def test_any_user_agent_is_stored(db, agent, kept):
    link_click(tracked(sent_recipient()), agent, timezone.now())
    assert Click.objects.get().user_agent == kept


def test_a_user_agent_is_read_as_utf_8(db):
    """A WSGI server hands over a header's bytes as latin-1 characters; the click keeps what was sent."""
    code = tracked(sent_recipient())
    assert call(f"/l/{code}", agent="Mozilla/5.0 🚀 中文".encode().decode("latin-1"))[0] == 302
    assert Click.objects.get().user_agent == "Mozilla/5.0 🚀 中文"


@pytest.mark.postgres
def test_racing_first_clicks_are_all_kept_and_move_the_status_once(transactional_db):
    recipient = sent_recipient(Status.DELIVERY_ACK)
    code = tracked(recipient)
    start = threading.Barrier(8)

    def click():
        try:
            start.wait()
            link_click(code, BROWSER, timezone.now())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=click) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Click.objects.filter(preview=False).count() == 8
    assert StatusHistory.objects.filter(source=StatusHistory.Source.CLICK).count() == 1
    recipient.refresh_from_db()
    assert recipient.status == Status.READ_ACK
    assert recipient.clicked_at in set(Click.objects.values_list("at", flat=True))


@pytest.mark.postgres
def test_a_connection_the_database_dropped_is_replaced(transactional_db):
    code = tracked(sent_recipient())
    with pytest.raises(OperationalError), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert call(f"/l/{code}")[0] == 302
    assert Click.objects.count() == 1


# manage.py check --deploy


def test_check_deploy_warns_when_links_go_out_untracked(settings):
    settings.DEBUG, settings.PUBLIC_BASE_URL = False, ""
    (warning,) = public_base_url_check(None)
    assert isinstance(warning, CheckWarning) and warning.id == "blasts.W001"
    assert "links go out as written, without click tracking" in warning.msg
    settings.PUBLIC_BASE_URL = "https://go.example.com"
    assert public_base_url_check(None) == []


@pytest.mark.skipif(connection.vendor != "sqlite", reason="what serve_links says on SQLite")
def test_serve_links_says_in_one_line_that_it_needs_postgresql():
    with pytest.raises(
        CommandError, match=r"^serve_links needs PostgreSQL; on SQLite the web serves /l/ itself"
    ):
        call_command("serve_links")
