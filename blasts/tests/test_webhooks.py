"""POST /api/webhook/wsapme: authentication, every payload shape, duplicates, races, replies, bad input."""

import base64
import http.client
import json
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
import responses
from django.db import OperationalError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from blasts.gateway.client import get_client
from blasts.lifecycle import blast_queue
from blasts.models import BlastRecipient, OptOut, StatusHistory, WebhookEvent
from blasts.sending.worker import send_due
from blasts.services import recipient_advance
from blasts.tracking import applier, events
from blasts.tracking.applier import webhook_events_apply
from blasts.tracking.events import webhook_events_store
from blasts.webhooks import MAX_EVENTS

from .conftest import apply_events, make_blast
from .test_slow_clients import gunicorn

Status = BlastRecipient.Status
State = WebhookEvent.State
FIXTURES = Path(__file__).parent / "fixtures"
MESSAGE_ID = "3EB0WM0F161ED1BD7A6532"
SECRET, NEXT_SECRET = "test-webhook-secret", "test-webhook-secret-next"  # pytest.ini
URL = "/api/webhook/wsapme"


def fixture(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def post(body, *, client=None, url=URL, headers=None, content_type="application/json"):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = {"X-Webhook-Token": SECRET} if headers is None else headers
    return (client or Client()).post(url, data=data, content_type=content_type, headers=headers)


def deliver(body, **kwargs) -> list[str]:
    """POST as WSAPME does (answered {"received": n}), then apply as the applier does: the events' states."""
    response = post(body, **kwargs)
    assert response.status_code == 200, response.content
    states = apply_events()
    assert response.json() == {"received": len(states)}
    return states


@pytest.fixture
def sent(db):
    """A recipient (+60123456789) whose send stored MESSAGE_ID, as the sender leaves it."""
    blast = make_blast(0)
    recipient = BlastRecipient.objects.create(blast=blast, phone="+60123456789", name="Aisyah")
    recipient_advance(recipient=recipient, status=Status.PENDING, source=StatusHistory.Source.SEND)
    BlastRecipient.objects.filter(pk=recipient.pk).update(message_id=MESSAGE_ID)
    recipient.refresh_from_db()
    return recipient


def nothing_written(recipient):
    recipient.refresh_from_db()
    return (
        WebhookEvent.objects.count() == 0
        and recipient.history.count() == 1
        and recipient.status == Status.PENDING
    )


# --- authentication -------------------------------------------------------------------------------


def test_a_request_without_the_secret_is_401_and_writes_nothing(sent):
    response = post(fixture("ack_nested"), headers={})
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Basic")
    assert nothing_written(sent)


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        (URL, {"X-Webhook-Token": "wrong"}),
        (URL + "?token=wrong", {}),
        (URL + "/wrong", {}),
        (URL, {"Authorization": "Basic " + base64.b64encode(b"wsapme:wrong").decode()}),
        (URL, {"Authorization": "Basic !!not-base64!!"}),
        (URL, {"X-Webhook-Token": SECRET[:-1]}),
    ],
)
def test_a_wrong_secret_is_403_and_writes_nothing(sent, url, headers):
    assert post(fixture("ack_nested"), url=url, headers=headers).status_code == 403
    assert nothing_written(sent)


@pytest.mark.parametrize("secret", [SECRET, NEXT_SECRET])
@pytest.mark.parametrize(
    ("url", "headers"),
    [
        (URL, "header"),
        (URL + "/", "header"),
        (URL + "?token={}", None),
        (URL + "/{}", None),
        (URL, "basic"),
        (URL, "bearer"),
    ],
)
def test_every_way_of_giving_either_live_secret_is_accepted(sent, secret, url, headers):
    given = {
        "header": {"X-Webhook-Token": secret},
        "basic": {"Authorization": "Basic " + base64.b64encode(f"wsapme:{secret}".encode()).decode()},
        "bearer": {"Authorization": f"Bearer {secret}"},
        None: {},
    }[headers]
    assert deliver(fixture("ack_nested"), url=url.format(secret), headers=given) == ["applied"]
    sent.refresh_from_db()
    assert sent.status == Status.DELIVERY_ACK


def test_the_webhook_needs_no_csrf_token_and_only_takes_post(sent):
    client = Client(enforce_csrf_checks=True)
    assert post(fixture("ack_nested"), client=client).status_code == 200
    assert client.get(URL, headers={"X-Webhook-Token": SECRET}).status_code == 405


# --- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "status", "gateway_time"),
    [
        ("ack_nested", Status.DELIVERY_ACK, 1634061785),
        ("ack_nested_numeric", Status.READ_ACK, 1634061790),
        ("ack_flat", Status.READ_ACK, None),
        ("ack_flat_ack", Status.DELIVERY_ACK, 1634061785),
    ],
)
def test_each_ack_shape_is_applied_through_the_ledger(sent, shape, status, gateway_time):
    assert deliver(fixture(shape)) == ["applied"]
    sent.refresh_from_db()
    assert sent.status == status
    entry = sent.history.latest("id")
    assert (entry.source, entry.raw) == (StatusHistory.Source.WEBHOOK, fixture(shape))
    expected = datetime.fromtimestamp(gateway_time, UTC) if gateway_time else None
    assert entry.occurred_at == expected
    event = WebhookEvent.objects.get()
    assert (event.kind, event.state, event.message_id, event.recipient) == (
        "status",
        "applied",
        MESSAGE_ID,
        sent,
    )


def test_error_before_delivery_fails_the_recipient(sent):
    deliver({"messageId": MESSAGE_ID, "status": "ERROR"})
    sent.refresh_from_db()
    assert sent.status == Status.FAILED and "ERROR" in sent.failure_reason


def test_an_unknown_status_is_kept_and_changes_nothing(sent):
    assert deliver({"messageId": MESSAGE_ID, "status": "EXPLODED"}) == ["ignored"]
    sent.refresh_from_db()
    assert sent.status == Status.PENDING
    assert "EXPLODED" in WebhookEvent.objects.get().note


def test_an_unknown_shape_is_stored_for_review_and_answered_200(db):
    assert deliver(fixture("unknown_shape")) == ["review"]
    assert WebhookEvent.objects.get().body == fixture("unknown_shape")


def test_a_list_of_events_is_applied_in_order(sent):
    events = [
        {"messageId": MESSAGE_ID, "status": "SERVER_ACK"},
        {"messageId": MESSAGE_ID, "status": "READ_ACK"},
    ]
    assert deliver(events) == ["applied", "applied"]
    sent.refresh_from_db()
    assert sent.status == Status.READ_ACK


# --- duplicates, order, races ---------------------------------------------------------------------


def test_an_event_delivered_ten_times_leaves_one_history_row(sent):
    states = [deliver(fixture("ack_nested"))[0] for _ in range(10)]
    assert states == ["applied"] + ["no_change"] * 9
    assert sent.history.filter(to_status=Status.DELIVERY_ACK).count() == 1
    assert WebhookEvent.objects.count() == 10  # every delivery is kept raw


def test_a_late_delivery_ack_does_not_undo_read(sent):
    deliver(fixture("ack_flat"))
    assert deliver(fixture("ack_nested")) == ["no_change"]
    sent.refresh_from_db()
    assert sent.status == Status.READ_ACK


def test_an_ack_that_beats_the_send_is_applied_when_the_send_stores_the_id(db, settings):
    settings.WSAPME_BASE_URL, settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX = (
        "https://wsapme.test",
        "t0k",
        False,
    )
    settings.SEND_RATE_PER_MINUTE = 0
    blast = make_blast(1, device="5850")
    blast_queue(blast=blast)
    early = {"messageId": "EARLY123", "status": "SERVER_ACK"}
    sent = {
        "success": True,
        "messageId": "EARLY123",
        "data": {"key": {"id": "EARLY123"}, "status": "PENDING"},
    }

    def gateway(request):  # the ack reaches us while the gateway is still answering the send
        assert deliver(early) == ["waiting"]
        return 200, {}, json.dumps(sent)

    with responses.RequestsMock() as mock_gateway:
        mock_gateway.add_callback(responses.POST, "https://wsapme.test/v1/sendMessage2", callback=gateway)
        assert send_due(client=get_client(), blast_id=blast.pk)["sent"] == 1

    recipient = blast.recipients.get()
    assert recipient.status == Status.SERVER_ACK
    assert WebhookEvent.objects.get().state == State.APPLIED


def test_an_ack_for_an_unknown_send_adopts_its_message_id(db):
    recipient = make_blast(1).recipients.get()
    recipient_advance(recipient=recipient, status=Status.SENDING, source=StatusHistory.Source.SEND)
    recipient_advance(recipient=recipient, status=Status.UNKNOWN, source=StatusHistory.Source.SEND)
    jid = recipient.phone.lstrip("+") + "@s.whatsapp.net"
    now = int(timezone.now().timestamp())
    ack = {
        "key": {"remoteJid": jid, "fromMe": True, "id": "ADOPTME"},
        "status": "SERVER_ACK",
        "messageC2STimestamp": now,
    }

    assert deliver(ack) == ["applied"]

    recipient.refresh_from_db()
    assert (recipient.message_id, recipient.status) == ("ADOPTME", Status.SERVER_ACK)
    assert "adopted" in WebhookEvent.objects.get().note


def test_no_guessing_when_two_unknown_sends_could_match(db):
    blast_a, blast_b = make_blast(0), make_blast(0)
    for blast in (blast_a, blast_b):
        recipient = BlastRecipient.objects.create(blast=blast, phone="+60123456789")
        recipient_advance(recipient=recipient, status=Status.SENDING, source=StatusHistory.Source.SEND)
        recipient_advance(recipient=recipient, status=Status.UNKNOWN, source=StatusHistory.Source.SEND)
    ack = {"key": {"remoteJid": "60123456789@s.whatsapp.net", "fromMe": True, "id": "WHICH"}, "status": 2}
    assert deliver(ack) == ["waiting"]
    assert not BlastRecipient.objects.filter(message_id="WHICH").exists()


# --- replies and opt-outs -------------------------------------------------------------------------


def test_a_reply_marks_the_most_recent_sent_recipient_replied_with_its_words(sent):
    older_blast = make_blast(0)
    older = BlastRecipient.objects.create(blast=older_blast, phone=sent.phone)
    recipient_advance(recipient=older, status=Status.PENDING, source=StatusHistory.Source.SEND)
    BlastRecipient.objects.filter(pk=older.pk).update(sent_at=timezone.now() - timedelta(hours=5))
    reply = {**fixture("reply"), "timestamp": int(timezone.now().timestamp())}

    assert deliver(reply) == ["applied"]

    sent.refresh_from_db()
    assert (sent.status, sent.reply_text) == (Status.REPLIED, "Hi, interested")
    assert sent.read_at is not None and sent.delivered_at is not None  # a reply proves both
    assert BlastRecipient.objects.get(pk=older.pk).status == Status.PENDING


def test_a_reply_after_the_attribution_window_is_kept_but_marks_no_one(sent, settings):
    settings.REPLY_ATTRIBUTION_HOURS = 72
    BlastRecipient.objects.filter(pk=sent.pk).update(sent_at=timezone.now() - timedelta(hours=73))
    assert deliver({**fixture("reply"), "timestamp": int(timezone.now().timestamp())}) == ["unattributed"]
    sent.refresh_from_db()
    assert sent.status == Status.PENDING


@pytest.mark.parametrize("text", ["STOP", "stop.", " Berhenti ", "Unsubscribe!", "stop all"])
def test_opt_out_words_put_the_number_on_the_suppression_list(sent, text):
    deliver({**fixture("reply"), "message": text, "timestamp": int(timezone.now().timestamp())})
    assert OptOut.objects.filter(phone="+60123456789").exists()
    sent.refresh_from_db()
    assert sent.status == Status.REPLIED


def test_a_reply_that_merely_mentions_stop_is_not_an_opt_out(sent):
    deliver(
        {
            **fixture("reply"),
            "message": "Don't stop sending deals!",
            "timestamp": int(timezone.now().timestamp()),
        }
    )
    assert not OptOut.objects.exists()


def test_a_duplicate_reply_changes_nothing_more(sent):
    reply = {**fixture("reply"), "timestamp": int(timezone.now().timestamp())}
    assert [deliver(reply)[0] for _ in range(3)] == ["applied", "no_change", "no_change"]
    assert sent.history.filter(to_status=Status.REPLIED).count() == 1


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"\xff\xfe{}", "application/json", 400),
        (b'{"messageId": NaN}', "application/json", 400),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
        (b"messageId=1&status=2", "application/x-www-form-urlencoded", 415),
        (b"x" * (64 * 1024 + 1), "application/json", 413),
        (json.dumps([{"messageId": MESSAGE_ID, "status": 2}] * 101).encode(), "application/json", 413),
    ],
)
def test_bad_input_is_a_4xx_and_writes_nothing(sent, body, content_type, status):
    assert post(body, content_type=content_type).status_code == status
    assert nothing_written(sent)


def test_an_event_that_cannot_be_stored_is_a_503_so_wsapme_sends_it_again(sent):
    # The store failing (test_replies.py fails the real INSERT, in a transaction of its own).
    with mock.patch("blasts.webhooks.webhook_events_store", side_effect=OperationalError("database is gone")):
        response = post(fixture("ack_nested"))
    assert response.status_code == 503 and response["Retry-After"]
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "body", [[], 3, b'"text"', None, {"messageId": ["x"], "status": 2}, {"messageId": "x" * 65}]
)
def test_json_that_is_not_an_event_is_stored_for_review(db, body):
    assert set(deliver(body)) <= {"review"}


# --- cost per event -------------------------------------------------------------------------------
# bench/webhooks.py is CPU-bound on the web workers, and every statement costs a round trip plus
# its compilation. The webhook only stores: one INSERT per request, whatever it holds. The applier
# applies acks for known sends set-based, so its statements per batch do not grow with the batch.


@pytest.mark.parametrize(
    "body",
    [
        fixture("ack_nested"),
        {"messageId": MESSAGE_ID, "status": "EXPLODED"},
        fixture("unknown_shape"),
        fixture("reply"),
    ],
    ids=["ack", "status", "shape", "reply"],
)
def test_one_event_costs_the_webhook_one_statement(sent, django_assert_num_queries, body):
    # The INSERT of the event, and nothing else: no lookup of the recipient, no ledger, no savepoint.
    # On PostgreSQL it is one INSERT … SELECT FROM unnest (bulk.rows_insert), run alone, so atomic by
    # itself; on SQLite Django's bulk_create, whose atomic(savepoint=False) adds no SAVEPOINT under the
    # test's transaction and whose BEGIN/COMMIT outside one are not run through a cursor. One is the
    # true minimum: it is pinned exactly.
    with django_assert_num_queries(1) as captured:
        assert post(body).json() == {"received": 1}
    assert captured.captured_queries[0]["sql"].startswith('INSERT INTO "blasts_webhookevent"')
    assert WebhookEvent.objects.get().state == State.RECEIVED


@pytest.mark.parametrize(
    "count",
    [
        40,
        # The most a body may hold. Only pinned on PostgreSQL: on SQLite Django's bulk_create splits
        # the rows into batches of 999 parameters (90 events), so 100 take two INSERTs there (one
        # transaction, still all or none).
        pytest.param(MAX_EVENTS, marks=pytest.mark.postgres),
    ],
)
def test_a_list_body_costs_the_webhook_one_multi_row_insert(sent, django_assert_num_queries, count):
    events = [{"messageId": f"{MESSAGE_ID}{i}", "status": "READ"} for i in range(count)]
    with django_assert_num_queries(1) as captured:
        assert post(events).json() == {"received": count}
    assert captured.captured_queries[0]["sql"].startswith('INSERT INTO "blasts_webhookevent"')
    assert WebhookEvent.objects.filter(state=State.RECEIVED).count() == count


def _acks_for_known_sends(n: int) -> list[BlastRecipient]:
    """n PENDING recipients with stored message ids, and one stored (unapplied) ack for each."""
    blast = make_blast(n)
    recipients = list(blast.recipients.order_by("pk"))
    for i, recipient in enumerate(recipients):
        recipient_advance(recipient=recipient, status=Status.PENDING, source=StatusHistory.Source.SEND)
        recipient.message_id = f"BATCH{blast.pk}x{i}"
    BlastRecipient.objects.bulk_update(recipients, ["message_id"])
    webhook_events_store([{"messageId": r.message_id, "status": "DELIVERY_ACK"} for r in recipients])
    return recipients


def _applier_statements(n: int) -> int:
    recipients = _acks_for_known_sends(n)
    with CaptureQueriesContext(connection) as captured:
        assert webhook_events_apply(limit=500) == Counter({State.APPLIED: n})
    delivered = BlastRecipient.objects.filter(pk__in=[r.pk for r in recipients], status=Status.DELIVERY_ACK)
    assert delivered.count() == n
    assert StatusHistory.objects.filter(recipient__in=recipients, to_status=Status.DELIVERY_ACK).count() == n
    return len(captured)


def test_the_applier_applies_a_batch_of_acks_in_a_constant_number_of_statements(db):
    # SAVEPOINT (the batch's transaction, under the test's), on PostgreSQL SET LOCAL synchronous_commit,
    # the claim (FOR UPDATE SKIP LOCKED), the sends by message id, the recipients locked in id order,
    # one UPDATE of them, one history INSERT, one UPDATE of the events, RELEASE: the same for 1 ack as
    # for 50, because acks for known sends are applied set-based (recipients_advance_many), not one
    # ledger call each.
    one = _applier_statements(1)
    assert one == 8 + (connection.vendor == "postgresql")
    assert _applier_statements(50) == one


def test_a_stored_event_is_received_and_changes_no_one_until_the_applier_runs(sent):
    assert post(fixture("ack_nested")).json() == {"received": 1}
    event = WebhookEvent.objects.get()
    assert (event.state, event.kind, event.recipient, event.applied_at) == (State.RECEIVED, "", None, None)
    assert event.body == fixture("ack_nested")
    sent.refresh_from_db()
    assert sent.status == Status.PENDING and sent.history.count() == 1

    assert apply_events() == ["applied"]
    event.refresh_from_db()
    assert (event.state, event.kind, event.recipient, event.message_id) == (
        "applied",
        "status",
        sent,
        MESSAGE_ID,
    )
    assert event.applied_at is not None
    sent.refresh_from_db()
    assert sent.status == Status.DELIVERY_ACK


def _ack_that_loses_the_race(message_id: str):
    """A send in flight and its early ack stored; applying the ack marks it waiting, and then the send
    stores its id before the applier's batch commits. Returns the recipient and the patch that does it."""
    recipient = make_blast(1).recipients.get()
    recipient_advance(recipient=recipient, status=Status.SENDING, source=StatusHistory.Source.SEND)
    ack = {"key": {"remoteJid": "60123456789@s.whatsapp.net", "fromMe": True, "id": message_id}, "status": 2}
    webhook_events_store([ack])
    batch_applied = events.webhook_event_apply

    def apply_then_the_send_stores_the_id(record, event):
        batch_applied(record, event)
        assert record.state == State.WAITING  # the id is not stored yet
        recipient_advance(
            recipient=recipient.pk,
            status=Status.PENDING,
            source=StatusHistory.Source.SEND,
            also={"message_id": message_id},
        )

    return recipient, mock.patch.object(applier, "webhook_event_apply", apply_then_the_send_stores_the_id)


def test_an_early_ack_checks_once_more_for_its_message_id_after_its_batch_commits(db):
    # The race: the applier finds no send with the id and marks the ack waiting; meanwhile the
    # sender stores the id and looks for waiting acks before the applier's batch commits, so it
    # sees none. After the commit the applier looks once more (webhook_events_apply_waiting), so
    # one of the two sides always sees the other and the ack is not left waiting.
    recipient, race = _ack_that_loses_the_race("EARLY1")
    with race:
        assert webhook_events_apply() == Counter({State.WAITING: 1})  # the batch's own verdict

    event = WebhookEvent.objects.get()
    assert (event.state, event.recipient) == (State.APPLIED, recipient)
    recipient.refresh_from_db()
    assert recipient.status == Status.SERVER_ACK


def test_without_the_look_after_commit_the_early_ack_would_be_left_waiting(db):
    # The same race with the second look switched off: what the test above guards against.
    _, race = _ack_that_loses_the_race("EARLY2")
    with race, mock.patch.object(applier, "webhook_events_apply_waiting") as look_again:
        webhook_events_apply()
    look_again.assert_called_once_with(message_ids=["EARLY2"], recipient_ids=[])
    assert WebhookEvent.objects.get().state == State.WAITING


# --- how the body arrives -------------------------------------------------------------------------


def test_a_byte_order_mark_before_the_json_is_accepted(sent):
    assert deliver(b"\xef\xbb\xbf" + json.dumps({"messageId": MESSAGE_ID, "status": "READ"}).encode()) == [
        "applied"
    ]
    assert WebhookEvent.objects.get().body == {"messageId": MESSAGE_ID, "status": "READ"}


def post_chunked(port: int, chunks: list[bytes]) -> tuple[int, dict]:
    """POST the chunks with Transfer-Encoding: chunked and no Content-Length, as a real client does."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {
            "Content-Type": "application/json",
            "X-Webhook-Token": SECRET,
            "Transfer-Encoding": "chunked",
        }
        client.request("POST", URL, body=iter(chunks), headers=headers, encode_chunked=True)
        response = client.getresponse()
        return response.status, json.loads(response.read())
    finally:
        client.close()


def post_raw(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return int(sock.recv(4096).split()[1])


@pytest.mark.django_db(transaction=True)
def test_a_chunked_event_is_received_within_the_size_cap_through_gunicorn(tmp_path, settings):
    # Django reads a body without Content-Length as empty; gunicorn decodes chunked bodies and
    # says so with wsgi.input_terminated, so the webhook reads to the end of the input instead.
    with gunicorn(tmp_path / "gunicorn.log", WEB_CONCURRENCY="1") as port:
        assert post_chunked(port, [b'{"messageId": "ABC", ', b'"status": "READ"}'])[1]["received"] == 1
        over = [b'{"padding": "', b"x" * settings.WEBHOOK_MAX_BYTES, b'"}']
        assert post_chunked(port, over)[0] == 413
        broken = f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Webhook-Token: {SECRET}\r\n"
        broken += "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
        assert post_raw(port, broken.encode()) == 400  # a chunk size that is not hex: not a 500
    stored = list(WebhookEvent.objects.values_list("body", flat=True))
    assert stored == [{"messageId": "ABC", "status": "READ"}]  # only the first; the others were refused
