"""The sandbox's tracked-link knobs: readers click, WhatsApp fetches previews, and a message with some
words gets its own click and reply chances; none of it moves the rest of a seeded timeline."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from blasts.gateway.sandbox import Sandbox
from blasts.gateway.sandbox_messages import USER_AGENTS, SandboxConfig, tracked_links
from blasts.models import BlastRecipient, Click, StatusHistory
from blasts.reporting.clicks import blast_clicks
from blasts.services import recipient_advance
from blasts.tracking.links import links_render

from .conftest import make_blast
from .test_sandbox import send, wait_for

Status = BlastRecipient.Status
READ = {"p_error": 0, "p_delivered": 1, "p_read": 1, "p_receipts_off": 0, "drop_rate": 0}
BROWSER = "Mozilla/5.0"


class LinkServer:
    """Our /l/ redirect as a phone meets it: every GET kept, each answered with a 302 to the shop."""

    def __init__(self):
        self.requests: list[tuple[str, str]] = []  # (path, user agent)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("User-Agent", "")))
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/shop")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def links():
    server = LinkServer()
    yield server
    server.httpd.shutdown()


def text(links, words="Promo"):
    """A message as we send it: two tracked links (one closing a sentence) and one left as written."""
    return f"{words}: {links.url}/l/Abc_123-x and {links.url}/l/Zz9. Terms: https://example.com/terms"


def clicks(sandbox):
    return requests.get(f"{sandbox.url}/_sandbox/clicks").json()["clicks"]


def test_a_reader_clicks_each_tracked_link_as_a_browser_without_following_the_redirect(links, wsapme_sandbox):
    wsapme_sandbox.config.update({**READ, "p_click": 1, "click_after": 0.05})
    message_id = send(wsapme_sandbox, message=text(links)).json()["messageId"]

    wait_for(lambda: len(clicks(wsapme_sandbox)) == 2)
    assert [path for path, _ in links.requests] == ["/l/Abc_123-x", "/l/Zz9"]  # not /shop, not example.com
    assert all(BROWSER in agent and "WhatsApp" not in agent for _, agent in links.requests)
    first, second = clicks(wsapme_sandbox)
    assert (first["message_id"], first["url"], first["preview"]) == (
        message_id,
        f"{links.url}/l/Abc_123-x",
        False,
    )
    assert (first["http_status"], first["location"]) == (302, f"{links.url}/shop")
    message = wsapme_sandbox.messages[message_id]
    read_at = dict((name, at) for at, name in message.timeline)["READ_ACK"]
    assert read_at < message.fetches[0][0] < message.fetches[1][0]  # after reading, one after the other
    assert second["url"] == f"{links.url}/l/Zz9"


@pytest.mark.parametrize(
    "knobs",
    [
        {},  # p_click is 0 unless set
        {"p_click": 1, "p_read": 0},  # nobody clicks what they did not read
        {"p_click": 1, "drop_rate": 1},  # a banned number's messages go nowhere
    ],
)
def test_no_click_without_the_knob_or_a_reader(links, wsapme_sandbox, knobs):
    wsapme_sandbox.config.update({**READ, "click_after": 0.01, **knobs})
    message_id = send(wsapme_sandbox, message=text(links)).json()["messageId"]
    assert wsapme_sandbox.messages[message_id].fetches == []
    assert clicks(wsapme_sandbox) == [] and links.requests == []


def test_a_receipts_off_reader_still_clicks(links, wsapme_sandbox):
    wsapme_sandbox.config.update({**READ, "p_receipts_off": 1, "p_click": 1, "click_after": 0.01})
    send(wsapme_sandbox, message=text(links))
    wait_for(lambda: len(links.requests) == 2)


def test_a_link_preview_is_fetched_at_once_as_whatsapp(links, wsapme_sandbox):
    wsapme_sandbox.config.update({"p_link_preview": 1, "p_error": 1})  # whatever happens to the message
    message_id = send(wsapme_sandbox, message=text(links)).json()["messageId"]

    assert [at for at, _ in wsapme_sandbox.messages[message_id].fetches] == [0, 0]  # as the send is taken
    wait_for(lambda: len(clicks(wsapme_sandbox)) == 2)
    assert links.requests == [("/l/Abc_123-x", "WhatsApp/2.24.1 A"), ("/l/Zz9", "WhatsApp/2.24.1 A")]
    assert {(c["message_id"], c["preview"], c["user_agent"]) for c in clicks(wsapme_sandbox)} == {
        (message_id, True, "WhatsApp/2.24.1 A")
    }


def test_words_in_a_message_get_their_own_click_and_reply_chances(links, wsapme_sandbox):
    wsapme_sandbox.config.update(
        {
            **READ,
            "p_click": 0,
            "p_reply": 0,
            "click_after": 0.01,
            "p_click_if": {"Diskaun": 1},
            "p_reply_if": {"Diskaun": 1, "Promo": 0},
        }
    )
    b = wsapme_sandbox.messages[send(wsapme_sandbox, message=text(links, "Diskaun 20%")).json()["messageId"]]
    a = wsapme_sandbox.messages[
        send(wsapme_sandbox, to="+60123456780", message=text(links)).json()["messageId"]
    ]

    assert b.reply is not None and len(b.fetches) == 2
    assert a.reply is None and a.fetches == []
    wsapme_sandbox.config.update({"p_reply": 1, "p_click": 1})  # an override of 0 wins over the knob
    a = wsapme_sandbox.messages[
        send(wsapme_sandbox, to="+60123456781", message=text(links)).json()["messageId"]
    ]
    assert a.reply is None and len(a.fetches) == 2


def test_the_click_knobs_leave_a_seeds_timelines_and_replies_as_they_were(links):
    def timelines(**knobs):
        sandbox = Sandbox(SandboxConfig(seed=5, **knobs)).start()
        try:
            result = []
            for n in range(40):
                message_id = send(sandbox, to=f"+6012{n:07d}", message=text(links)).json()["messageId"]
                result.append((sandbox.messages[message_id].timeline, sandbox.messages[message_id].reply))
            return result, sum(bool(m.fetches) for m in sandbox.messages.values())
        finally:
            sandbox.stop()

    plain, no_fetches = timelines()
    clicking, with_fetches = timelines(p_click=0.5, p_link_preview=0.5, click_after=3600)
    assert clicking == plain
    assert no_fetches == 0 and 0 < with_fetches < 40


@pytest.mark.parametrize("value", [{"Diskaun": 2}, {"Diskaun": "high"}, ["Diskaun"], {"Diskaun": True}])
def test_a_chance_override_must_map_words_to_probabilities(wsapme_sandbox, value):
    answer = requests.post(f"{wsapme_sandbox.url}/_sandbox/config", json={"p_click_if": value})
    assert answer.status_code == 400 and "p_click_if maps texts to probabilities" in answer.json()["error"]
    config = SandboxConfig()
    config.update({"p_reply_if": {"Diskaun": 1}})
    assert config.p_reply_if == {"Diskaun": 1.0}


def test_only_our_tracked_links_are_fetched_without_a_sentences_punctuation():
    assert tracked_links(
        "Lihat *https://go.example.com/l/a-b_c*, (https://go.example.com/l/Zz9). https://x.com/a"
    ) == [
        "https://go.example.com/l/a-b_c",
        "https://go.example.com/l/Zz9",
    ]


# --- with our redirect ----------------------------------------------------------------------------


def test_the_sandbox_clicks_our_redirect_and_only_its_clicks_count(wsapme_sandbox, our_links):
    # Clicks come a few tenths of a second after each send, once its PENDING is recorded.
    wsapme_sandbox.config.update({**READ, "p_click": 1, "click_after": 0.3, "p_link_preview": 1})
    blast = make_blast(2, message="Diskaun 20%: https://shop.example.com/promo")
    for recipient in blast.recipients.all():  # sent as the sender sends: links rendered, then PENDING
        send(wsapme_sandbox, to=recipient.phone, message=links_render(recipient, blast.message))
        recipient_advance(recipient=recipient, status=Status.PENDING, source=StatusHistory.Source.SEND)

    wait_for(lambda: len(clicks(wsapme_sandbox)) == 4, timeout=10)

    assert {(c["preview"], c["http_status"], c["location"]) for c in clicks(wsapme_sandbox)} == {
        (True, 302, "https://shop.example.com/promo"),
        (False, 302, "https://shop.example.com/promo"),
    }
    assert sorted(Click.objects.values_list("preview", "user_agent")) == [
        (False, USER_AGENTS["click"]),
        (False, USER_AGENTS["click"]),
        (True, "WhatsApp/2.24.1 A"),
        (True, "WhatsApp/2.24.1 A"),
    ]
    for recipient in blast.recipients.all():  # a click proves reading
        assert recipient.clicked_at and recipient.status == Status.READ_ACK
        assert recipient.history.filter(source=StatusHistory.Source.CLICK).exists()
    assert (blast_clicks(blast.pk).clicked, blast_clicks(blast.pk).sent) == (2, 2)
