"""Replies and opt-outs from outside: during open sends, in any text, in list bodies."""

import json
import unicodedata
from contextlib import contextmanager
from datetime import timedelta

import pytest
import requests
import responses
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from blasts.gateway.client import get_client
from blasts.lifecycle import blast_queue
from blasts.models import Blast, BlastRecipient, OptOut, StatusHistory, WebhookEvent
from blasts.sending.ledger import recipients_reap_lost_sends
from blasts.sending.worker import send_due
from blasts.services import recipient_advance
from blasts.tracking.events import webhook_events_apply_waiting

from .conftest import apply_events, make_blast, new_phone

Status = BlastRecipient.Status
State = WebhookEvent.State
SEND_URL = "https://wsapme.test/v1/sendMessage2"
SECRET = "test-webhook-secret"  # pytest.ini
CLIENT = Client(raise_request_exception=False)  # a crash shows as the 500 WSAPME would get


def post(body):
    return CLIENT.post(
        "/api/webhook/wsapme", data=body if isinstance(body, str) else json.dumps(body),
        content_type="application/json", headers={"X-Webhook-Token": SECRET},
    )  # fmt: skip


def deliver(body) -> list[str]:
    """POST as WSAPME does (stored, answered {"received": n}), then apply as the applier does.

    The states the events ended in; none of them failed to apply (which would mark it for review).
    """
    response = post(body)
    assert response.status_code == 200, response.content
    states = apply_events()
    assert response.json() == {"received": len(states)}
    crashed = WebhookEvent.objects.filter(note__startswith="Could not be applied")
    assert not crashed.exists(), list(crashed.values_list("note", flat=True))
    return states


def reply_from(phone: str, text: str = "Yes please, how much?") -> dict:
    return {"type": "text", "from": phone.lstrip("+") + "@c.us", "message": text,
            "timestamp": int(timezone.now().timestamp())}  # fmt: skip


@pytest.fixture
def gateway(settings):
    settings.WSAPME_BASE_URL, settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX = (
        "https://wsapme.test",
        "t0k",
        False,
    )
    settings.SEND_RATE_PER_MINUTE = 0
    with responses.RequestsMock() as mock_gateway:
        yield mock_gateway


def queued_blast() -> BlastRecipient:
    blast = make_blast(1)
    blast_queue(blast=blast)
    return blast.recipients.get()


def sent_answer(message_id: str) -> tuple:
    return (
        200,
        {},
        json.dumps({"success": True, "messageId": message_id, "data": {"key": {"id": message_id}}}),
    )


# --- a reply while its send is open ---------------------------------------------------------------


def test_a_reply_during_the_send_call_waits_and_counts_once_the_send_is_stored(db, gateway):
    recipient = queued_blast()

    def answer(request):  # the recipient answers while the gateway is still answering our send
        assert deliver(reply_from(recipient.phone)) == ["waiting"]
        return sent_answer("MSG-FAST")

    gateway.add_callback(responses.POST, SEND_URL, callback=answer)
    assert send_due(client=get_client(), blast_id=recipient.blast_id)["sent"] == 1

    recipient.refresh_from_db()
    assert (recipient.status, recipient.message_id) == (Status.REPLIED, "MSG-FAST")
    assert recipient.reply_text == "Yes please, how much?"
    assert WebhookEvent.objects.get().state == State.APPLIED


def test_a_reply_during_a_send_that_ends_unknown_counts_and_a_later_ack_adopts_the_message_id(db, gateway):
    recipient = queued_blast()

    def stall(request):  # the reply comes in, then the call times out: the outcome is unknown
        deliver(reply_from(recipient.phone, "Interested!"))
        raise requests.ReadTimeout("read timed out")

    gateway.add_callback(responses.POST, SEND_URL, callback=stall)
    assert send_due(client=get_client(), blast_id=recipient.blast_id)["unknown"] == 1

    recipient.refresh_from_db()
    assert (recipient.status, recipient.reply_text) == (Status.REPLIED, "Interested!")
    assert recipient.message_id is None
    # The gateway's ack names the number: the send is matched and its message id adopted.
    jid = recipient.phone.lstrip("+") + "@s.whatsapp.net"
    ack = {"key": {"remoteJid": jid, "fromMe": True, "id": "LATE-ACK"}, "status": "DELIVERY_ACK",
           "messageC2STimestamp": int(timezone.now().timestamp())}  # fmt: skip
    assert deliver(ack) == ["no_change"]  # replied already: the ack moves nothing back
    recipient.refresh_from_db()
    assert (recipient.status, recipient.message_id) == (Status.REPLIED, "LATE-ACK")
    # Later acks of that message now find it by its id.
    assert deliver({"messageId": "LATE-ACK", "status": "READ"}) == ["no_change"]
    assert not WebhookEvent.objects.filter(state__in=[State.WAITING, State.UNATTRIBUTED]).exists()


def test_a_reply_during_a_send_whose_sender_died_counts_when_the_lost_send_is_reaped(db):
    recipient = queued_blast()
    recipient_advance(recipient=recipient, status=Status.SENDING, source=StatusHistory.Source.SEND,
                      also={"claimed_by": "dead:1:1", "claimed_until": timezone.now() + timedelta(seconds=60)})  # fmt: skip

    assert deliver(reply_from(recipient.phone)) == ["waiting"]
    assert recipients_reap_lost_sends(now=timezone.now() + timedelta(seconds=61)) == 1

    recipient.refresh_from_db()
    assert recipient.status == Status.REPLIED and recipient.reply_text
    assert WebhookEvent.objects.get().state == State.APPLIED


def test_a_reply_left_waiting_by_a_sender_killed_after_its_commit_is_applied_by_the_next_sender(db, gateway):
    recipient = queued_blast()
    recipient_advance(recipient=recipient, status=Status.SENDING, source=StatusHistory.Source.SEND)
    assert deliver(reply_from(recipient.phone)) == ["waiting"]
    # The sender committed the outcome and died before it looked for waiting replies.
    recipient_advance(recipient=recipient, status=Status.PENDING, source=StatusHistory.Source.SEND,
                      also={"message_id": "MSG-KILLED"})  # fmt: skip

    send_due(client=get_client(), blast_id=recipient.blast_id)  # nothing to send: housekeeping only

    recipient.refresh_from_db()
    assert recipient.status == Status.REPLIED


def test_a_reply_waiting_on_a_send_the_gateway_refused_goes_to_the_last_send_it_can_answer(
    db, gateway, settings
):
    settings.SEND_LEASE_SECONDS = 0.5  # the run ends instead of waiting for the retry
    recipient = queued_blast()
    earlier = BlastRecipient.objects.create(blast=make_blast(0), phone=recipient.phone)
    recipient_advance(recipient=earlier, status=Status.PENDING, source=StatusHistory.Source.SEND)
    BlastRecipient.objects.filter(pk=earlier.pk).update(sent_at=timezone.now() - timedelta(hours=2))

    def refused(request):  # a 503: the gateway certainly did not take this send
        deliver(reply_from(recipient.phone))
        return 503, {}, "busy"

    gateway.add_callback(responses.POST, SEND_URL, callback=refused)
    assert send_due(client=get_client(), blast_id=recipient.blast_id)["requeued"] == 1

    earlier.refresh_from_db()
    assert earlier.status == Status.REPLIED
    assert BlastRecipient.objects.get(pk=recipient.pk).status == Status.QUEUED


# --- opt-outs in any text -------------------------------------------------------------------------

FLAGS = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"  # England: tag characters


@pytest.mark.parametrize(
    "text",
    [f"STOP {FLAGS * 5}", "STOP" + "\U0001f1f2\U0001f1fe" * 5, "\uff33\uff34\uff2f\uff30", "stop\u0301!!", "STOP sending me these",
     "Opt-out please", "Berhenti.", "\u200bstop"],
)  # fmt: skip
def test_an_opt_out_in_any_text_is_recorded_and_fits_its_column(db, text):
    phone = new_phone()
    assert deliver(reply_from(phone, text)) == ["unattributed"]
    opt_out = OptOut.objects.get(phone=phone)
    assert len(opt_out.reason) <= OptOut._meta.get_field("reason").max_length


@pytest.mark.parametrize("text", ["Stopping by tomorrow", "Don't stop", "STOPS", "unstoppable"])
def test_a_reply_that_does_not_start_with_an_opt_out_word_is_not_an_opt_out(db, text):
    deliver(reply_from(new_phone(), text))
    assert not OptOut.objects.exists()


def test_a_nul_or_a_lone_surrogate_is_stored_as_a_replacement_character(db):
    phone = new_phone()
    body = json.dumps(reply_from(phone, "STOP\u0000now")).replace("now", "now\\ud800")
    assert deliver(body) == ["unattributed"]
    assert WebhookEvent.objects.get().body["message"] == "STOP\ufffdnow\ufffd"
    assert OptOut.objects.filter(phone=phone).exists()


# Arbitrary Unicode: astral planes, tag characters, combining marks, NUL, lone surrogates.
any_text = st.text(st.characters(codec=None, categories=None), max_size=300)
SHAPES = {
    "reply": {"type": "text", "message": "Hi", "from": "60123456789@c.us", "timestamp": 1617690369},
    "ack_nested": {"key": {"remoteJid": "60123456789@s.whatsapp.net", "fromMe": True, "id": "3EB0"},
                   "status": "SERVER_ACK", "messageC2STimestamp": 1617690369},
    "ack_flat": {"messageId": "3EB0", "status": "READ", "timestamp": 1617690369},
    "ack_flat_ack": {"id": "3EB0", "ack": 3, "remoteJid": "60123456789@c.us"},
}  # fmt: skip


def _replace_strings(value, texts):
    if isinstance(value, dict):
        return {key: _replace_strings(item, texts) for key, item in value.items()}
    return next(texts) if isinstance(value, str) else value


@settings(max_examples=150, deadline=None)
@given(shape=st.sampled_from(sorted(SHAPES)), texts=st.lists(any_text, min_size=4, max_size=4))
def test_arbitrary_text_in_every_string_field_of_every_shape_is_stored(db, shape, texts):
    before = WebhookEvent.objects.count()
    deliver(_replace_strings(SHAPES[shape], iter(texts)))
    assert WebhookEvent.objects.count() == before + 1


def _separates(c: str) -> bool:
    """Whether `c` parts words: no letter or digit, also once decomposed (NFKD), and no combining mark
    (a mark belongs to the letter before it: "STOP\u1a55" is one word, not STOP and a separator)."""
    return not unicodedata.category(c).startswith("M") and not any(
        part.isalnum() for part in unicodedata.normalize("NFKD", c)
    )


separators = st.text(st.characters(codec=None, categories=None).filter(_separates), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(word=st.sampled_from(["STOP", "stop", "Unsubscribe", "BERHENTI", "opt out", "Stop all"]), sep=separators,
       rest=any_text)  # fmt: skip
def test_a_reply_starting_with_an_opt_out_word_is_an_opt_out_whatever_follows(db, word, sep, rest):
    phone = new_phone()
    deliver(reply_from(phone, word + sep + rest))
    assert OptOut.objects.filter(phone=phone).exists()


# --- a list body is stored whole or not at all ----------------------------------------------------


@contextmanager
def refusing_rows_with(text: str):
    """The database itself refuses to store an event whose body holds `text` (a trigger raises)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE OR REPLACE FUNCTION blasts_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.body::text LIKE '%{text}%' THEN RAISE EXCEPTION 'database is gone'; END IF; "
                "RETURN NEW; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER blasts_test_refuse BEFORE INSERT ON blasts_webhookevent "
                "FOR EACH ROW EXECUTE FUNCTION blasts_test_refuse()"
            )
            drop = [
                "DROP TRIGGER blasts_test_refuse ON blasts_webhookevent",
                "DROP FUNCTION blasts_test_refuse()",
            ]
        else:
            cursor.execute(
                "CREATE TEMP TRIGGER blasts_test_refuse BEFORE INSERT ON blasts_webhookevent "
                f"WHEN NEW.body LIKE '%{text}%' BEGIN SELECT RAISE(ABORT, 'database is gone'); END"
            )
            drop = ["DROP TRIGGER blasts_test_refuse"]
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for sql in drop:
                cursor.execute(sql)


@pytest.mark.django_db(transaction=True)  # the webhook's own transaction, as in production
def test_a_list_body_whose_later_event_cannot_be_stored_stores_none_and_its_resend_stores_each_once():
    phones = [new_phone() for _ in range(3)]
    body = [reply_from(phone, f"Hello {n}") for n, phone in enumerate(phones)]

    with refusing_rows_with(phones[-1].lstrip("+")):  # the first two rows go in, the last fails
        response = post(body)
    assert response.status_code == 503 and response["Retry-After"]
    assert not WebhookEvent.objects.exists()

    assert deliver(body) == ["unattributed"] * 3
    assert sorted(WebhookEvent.objects.values_list("phone", flat=True)) == sorted(phones)


def test_text_cut_to_its_column_ends_with_an_ellipsis(db):
    from blasts.text import fit

    assert fit(Blast, "state_reason", "x" * 300) == "x" * 254 + "…"
    assert fit(Blast, "state_reason", "short") == "short"


# --- an unknown send whose acks name no number: matched by hand -----------------------------------


def unknown_send() -> BlastRecipient:
    recipient = queued_blast()
    recipient_advance(recipient=recipient, status=Status.SENDING, source=StatusHistory.Source.SEND)
    recipient_advance(
        recipient=recipient, status=Status.UNKNOWN, source=StatusHistory.Source.INFERRED, reason="No answer."
    )
    return recipient


def test_flat_acks_of_an_unknown_send_wait_and_the_recipient_page_offers_them(admin_client):
    recipient = unknown_send()
    assert deliver({"messageId": "FLAT-1", "status": "SERVER_ACK"}) == ["waiting"]
    assert deliver({"messageId": "FLAT-1", "status": "READ"}) == ["waiting"]

    page = admin_client.get(reverse("recipient-detail", args=[recipient.blast_id, recipient.pk]))

    assert [(m.message_id, m.acks, m.statuses) for m in page.context["match_choices"]] == [
        ("FLAT-1", 2, "SERVER_ACK, READ")
    ]
    assert b"Match to this send" in page.content


def test_an_operator_matches_an_unknown_send_and_its_waiting_acks_go_through_the_ledger(
    admin_client, admin_user
):
    recipient = unknown_send()
    deliver({"messageId": "FLAT-1", "status": "SERVER_ACK"})
    deliver({"messageId": "FLAT-1", "status": "READ"})
    url = reverse("recipient-match", args=[recipient.blast_id, recipient.pk])

    response = admin_client.post(url, {"message_id": "FLAT-1"}, follow=True)

    assert b"2 waiting acks applied" in response.content
    recipient.refresh_from_db()
    assert (recipient.status, recipient.message_id, recipient.failure_reason) == (
        Status.READ_ACK,
        "FLAT-1",
        "",
    )
    assert list(recipient.history.values_list("to_status", flat=True))[-2:] == [
        Status.SERVER_ACK,
        Status.READ_ACK,
    ]
    assert set(WebhookEvent.objects.values_list("state", flat=True)) == {State.APPLIED}
    assert all(
        note == f"Matched by hand by {admin_user}."
        for note in WebhookEvent.objects.values_list("note", flat=True)
    )
    # Offered no more, and a second match is refused with a message.
    assert (
        admin_client.get(reverse("recipient-detail", args=[recipient.blast_id, recipient.pk])).context[
            "match_choices"
        ]
        == []
    )
    again = admin_client.post(url, {"message_id": "FLAT-1"}, follow=True)
    assert b"has a message id already" in again.content


def test_a_match_to_an_id_with_no_waiting_ack_is_refused_and_changes_nothing(admin_client):
    recipient = unknown_send()
    response = admin_client.post(
        reverse("recipient-match", args=[recipient.blast_id, recipient.pk]),
        {"message_id": "NOPE"},
        follow=True,
    )
    assert b"No ack is waiting with that message id" in response.content
    recipient.refresh_from_db()
    assert (recipient.status, recipient.message_id) == (Status.UNKNOWN, None)


def test_matching_by_hand_needs_staff(client, django_user_model):
    recipient = unknown_send()
    deliver({"messageId": "FLAT-1", "status": "SERVER_ACK"})
    client.force_login(django_user_model.objects.create_user("someone"))
    url = reverse("recipient-match", args=[recipient.blast_id, recipient.pk])
    assert client.post(url, {"message_id": "FLAT-1"}).status_code == 403
    assert BlastRecipient.objects.get(pk=recipient.pk).message_id is None


def test_the_blast_page_counts_unknown_sends_and_the_messages_with_acks_waiting_for_a_match(admin_client):
    recipient = unknown_send()
    url = reverse("blast-live", args=[recipient.blast_id])
    assert b"acks waiting for a match" not in admin_client.get(url).content
    deliver({"messageId": "FLAT-1", "status": "SERVER_ACK"})
    deliver({"messageId": "FLAT-1", "status": "READ"})
    deliver({"messageId": "FLAT-2", "status": "SERVER_ACK"})

    page = admin_client.get(url)

    assert page.context["unmatched"] == (1, 2)
    assert b"Outcome unknown for 1 send; 2 messages with acks waiting for a match" in page.content


# --- the poller's sweep of waiting events ---------------------------------------------------------


def test_the_sweep_applies_an_ack_that_came_during_the_send_once_the_send_is_unknown(db):
    recipient = queued_blast()
    recipient_advance(recipient=recipient, status=Status.SENDING, source=StatusHistory.Source.SEND)
    jid = recipient.phone.lstrip("+") + "@s.whatsapp.net"
    ack = {"key": {"remoteJid": jid, "fromMe": True, "id": "DURING"}, "status": "SERVER_ACK"}
    assert deliver(ack) == ["waiting"]  # no unknown send to match yet: it is still open
    recipient_advance(recipient=recipient, status=Status.UNKNOWN, source=StatusHistory.Source.INFERRED)

    assert webhook_events_apply_waiting() == 1

    recipient.refresh_from_db()
    assert (recipient.status, recipient.message_id) == (Status.SERVER_ACK, "DURING")


def test_the_sweep_costs_one_statement_for_acks_that_can_find_no_send(db, django_assert_num_queries):
    for n in range(30):
        deliver({"messageId": f"NOT-OURS-{n}", "status": "READ"})
    deliver({"key": {"remoteJid": "60123450000@s.whatsapp.net", "fromMe": True, "id": "X"}, "status": 2})
    assert WebhookEvent.objects.filter(state=State.WAITING).count() == 31
    with django_assert_num_queries(1):
        assert webhook_events_apply_waiting() == 0


# --- the gateway's own answers are outside text too -----------------------------------------------


@pytest.mark.parametrize(
    ("answer", "outcome", "status"),
    [
        ({"success": True, "messageId": "M-NUL", "message": "Sent\u0000 \ud83d"}, "sent", Status.PENDING),
        ({"success": True, "messageId": "X" * 65}, "unknown", Status.UNKNOWN),  # no id we could store
        ({"success": False, "message": "bad number \u0000" + "\U000e0067" * 400}, "failed", Status.FAILED),
    ],
    ids=["nul-and-surrogate", "long-id", "long-reason"],
)
def test_a_gateway_answer_with_unstorable_text_is_recorded(db, gateway, answer, outcome, status):
    recipient = queued_blast()
    body = json.dumps(answer)  # NUL and the lone surrogate go escaped, as JSON writes them
    gateway.add(responses.POST, SEND_URL, body=body, content_type="application/json")

    assert send_due(client=get_client(), blast_id=recipient.blast_id)[outcome] == 1

    recipient.refresh_from_db()
    assert recipient.status == status
    assert "\x00" not in json.dumps(recipient.history.last().raw) + recipient.failure_reason
