"""Fuzzing POST /api/webhook/wsapme: no 5xx, nothing stored for a refused body, no recipient changed by junk.

Three Hypothesis strategies (2,000 examples together): arbitrary JSON built from the payloads'
own vocabulary, mutations of the real payload shapes in fixtures/, and raw bytes under any
content type. After every example the checks in `exchange` hold:

- the answer is below 500;
- a refused body (not 200) stored no WebhookEvent; an accepted one stored one per event, and
  the applier (run after every example, as `manage.py apply_events` does) applied each of them
  without an error;
- sentinel recipients (message ids and phones drawn at random per run, so no fuzzed payload
  names them) are untouched: same status, same history, no reply text;
- the recipient the fixtures name (MESSAGE_ID, +60123456789) gains one history row per event
  stored as applied to it, each a move the ledger allows (forward, or to FAILED before
  delivery), and none otherwise.
"""

import base64
import copy
import io
import itertools
import json
import random
import string
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.db.models import Count
from django.test import Client
from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from blasts.models import BlastRecipient, StatusHistory, WebhookEvent
from blasts.services import recipient_advance
from blasts.statuses import can_move
from blasts.tracking.applier import webhook_events_apply
from blastsite.wsgi import application

from .conftest import make_blast

Status = BlastRecipient.Status
State = WebhookEvent.State
FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_BODIES = [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]
MESSAGE_ID, TARGET_PHONE = "3EB0WM0F161ED1BD7A6532", "+60123456789"  # what the fixtures name
SECRET = "test-webhook-secret"  # pytest.ini
URL = "/api/webhook/wsapme"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
CLIENT = Client(raise_request_exception=False)  # a crash must show as the 500 WSAPME would get

# --- strategies -----------------------------------------------------------------------------------

KEYS = (
    "key", "id", "messageId", "status", "ack", "remoteJid", "fromMe", "from", "message", "type",
    "timestamp", "messageC2STimestamp", "data",
)  # fmt: skip
STATUS_WORDS = (
    "ERROR", "PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ", "READ_ACK", "PLAYED", "REPLIED", "CLOSED",
    "0", "1", "2", "3", "4", "5", " read_ack ", "EXPLODED",
)  # fmt: skip
# Mostly text the encoder takes; sometimes lone surrogates and NUL, which the webhook stores as U+FFFD.
clean_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
any_text = st.text(max_size=20)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**600), max_value=10**600),  # past float's range
    st.floats(allow_nan=False),
    clean_text,
    any_text,
    st.sampled_from(STATUS_WORDS),
    st.integers(-1, 6),
    st.integers(946_684_800, 4_102_444_800),  # plausible epoch seconds
    st.integers(946_684_800_000, 4_102_444_800_000),  # and milliseconds
    st.from_regex(r"\A[0-9]{6,16}(@c\.us|@s\.whatsapp\.net|:12@s\.whatsapp\.net)?\Z"),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), clean_text), children, max_size=6),
    ),
    max_leaves=30,
)
# Dicts with a subset of the real keys and values near the real ones, so the parser's branches
# (status, reply, unknown) are all reached. Valid numbers are +60 12-…: never a sentinel's +60 19-….
ids = st.one_of(st.text(min_size=1, max_size=70), st.sampled_from([MESSAGE_ID[:-1], MESSAGE_ID + "X"]))
jids = st.from_regex(r"\A6012[0-9]{7}(@c\.us|@s\.whatsapp\.net|:3@s\.whatsapp\.net)\Z")
times = st.one_of(
    st.integers(946_684_800, 4_102_444_800), st.integers(946_684_800_000, 4_102_444_800_000).map(str)
)
near_real = {
    "id": ids,
    "messageId": ids,
    "status": st.sampled_from(STATUS_WORDS),
    "ack": st.integers(-1, 6),
    "remoteJid": jids,
    "from": jids,
    "fromMe": st.booleans(),
    "message": clean_text,
    "type": st.sampled_from(["text", "image", "audio"]),
    "timestamp": times,
    "messageC2STimestamp": times,
}
key_objects = st.one_of(
    st.fixed_dictionaries(
        {}, optional={name: st.one_of(near_real[name], scalars) for name in ("id", "remoteJid", "fromMe")}
    ),
    json_values,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        name: key_objects if name == "key" else st.one_of(near_real.get(name, json_values), json_values)
        for name in KEYS
    },
)
events = st.one_of(event_like, st.lists(event_like, max_size=4), json_values)
huge_strings = st.tuples(
    st.sampled_from(["x", "é", "😀", '"', "\\", "\u2028"]),
    st.one_of(st.integers(1, 100), st.integers(60_000, 70_000)),
).map(lambda pair: pair[0] * pair[1])
deep_nestings = st.tuples(st.sampled_from(["list", "dict"]), st.integers(1, 3_000)).map(
    lambda kind: (
        "[" * kind[1] + "]" * kind[1] if kind[0] == "list" else '{"data":' * kind[1] + "1" + "}" * kind[1]
    )
)
# Number tokens json.dumps never writes: overflow to inf, or past Python's 4,300-digit limit.
raw_numbers = st.sampled_from(
    ["1e400", "-1e400", "1E309", "1e-400", "-0", "1" + "0" * 400, "1" + "0" * 5000, "12345678901234567890.5"]
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=xyz",
            "Multipart/Form-Data",
            "",
            "application/octet-stream",
        ]
    ),
    # No ';': an RFC 2231 parameter with a bogus charset crashes Django itself (ticket #36991).
    st.text(string.ascii_letters + string.digits + "/+-. ", max_size=30),
)


def serialize(value, ensure_ascii: bool) -> bytes:
    """As WSAPME would send it; without ascii escapes a lone surrogate becomes invalid UTF-8."""
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


def _slots(value):
    """(container, key) for every value inside `value`, at any depth."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in list(items):
        yield value, key
        yield from _slots(child)


@st.composite
def mutated_payloads(draw):
    """A real payload shape with keys dropped, values retyped, huge strings, deep nesting, odd numbers."""
    body = copy.deepcopy(draw(st.sampled_from(FIXTURE_BODIES)))
    # placeholder -> raw JSON text that json.dumps cannot write (or would recurse too deep on)
    splices: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 4))):
        slots = list(_slots(body))
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        mutation = draw(st.sampled_from(["drop", "retype", "huge", "nest", "number", "add"]))
        if mutation == "drop":
            del container[key]
        elif mutation == "retype":
            container[key] = draw(json_values)
        elif mutation == "huge":
            container[key] = draw(huge_strings)
        elif mutation in ("nest", "number"):
            placeholder = f"@@splice-{len(splices)}@@"
            container[key] = placeholder
            splices[placeholder] = draw(deep_nestings if mutation == "nest" else raw_numbers)
        elif isinstance(container, dict):
            container[draw(st.one_of(st.sampled_from(KEYS), clean_text))] = draw(json_values)
        else:
            container.append(draw(json_values))
    if draw(st.integers(0, 9)) == 0:  # a batch, sometimes one over the 100-event limit
        body = [body] * draw(st.sampled_from([1, 2, 100, 101]))
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    for placeholder, raw in splices.items():
        text = text.replace(json.dumps(placeholder), raw)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def corrupted_json(draw):
    """Valid JSON bytes with one byte that cannot start or continue UTF-8 here."""
    raw = serialize(draw(json_values), ensure_ascii=draw(st.booleans()))
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + raw[at:]


# --- the exchange and its checks ------------------------------------------------------------------


def _sentinel_state(sentinels):
    return list(
        BlastRecipient.objects.filter(pk__in=sentinels)
        .annotate(rows=Count("history"))
        .order_by("pk")
        .values_list("pk", "status", "rows", "reply_text", "message_id")
    )


def _fresh_target(blast) -> BlastRecipient:
    """The fixtures' recipient, just sent (PENDING with MESSAGE_ID), made again if an example moved it."""
    target = BlastRecipient.objects.filter(message_id=MESSAGE_ID).first()
    if target and target.status == Status.PENDING and not target.reply_text and target.history.count() == 1:
        return target
    BlastRecipient.objects.filter(message_id=MESSAGE_ID).delete()
    BlastRecipient.objects.filter(blast=blast, phone=TARGET_PHONE).delete()
    target = BlastRecipient.objects.create(blast=blast, phone=TARGET_PHONE, name="Aisyah")
    recipient_advance(recipient=target, status=Status.PENDING, source=StatusHistory.Source.SEND)
    BlastRecipient.objects.filter(pk=target.pk).update(message_id=MESSAGE_ID)
    return target


@pytest.fixture
def seeded(db):
    """A blast with three sent sentinels no fuzzed payload can name, and the fixtures' recipient."""
    rng = random.SystemRandom()
    blast = make_blast(0)
    sentinels = []
    for _ in range(3):
        # +60 19-xxx xxxx: a mobile range the fixtures do not use, 7 random digits per run.
        sentinel = BlastRecipient.objects.create(blast=blast, phone=f"+6019{rng.randrange(10**7):07d}")
        recipient_advance(recipient=sentinel, status=Status.PENDING, source=StatusHistory.Source.SEND)
        message_id = "".join(rng.choices(string.ascii_uppercase + string.digits, k=22))
        BlastRecipient.objects.filter(pk=sentinel.pk).update(message_id=message_id)
        sentinels.append(sentinel.pk)
    _fresh_target(blast)
    return blast, sentinels, _sentinel_state(sentinels)


def applied_all(stored, shown) -> None:
    """Apply the stored events as `manage.py apply_events` does; none may fail to apply.

    The applier's counterpart of "no 5xx": an event whose applying raised is marked for review
    with "Could not be applied: <the error>", and a database error raises here.
    """
    while sum(webhook_events_apply().values()):
        pass
    assert not stored.filter(state=State.RECEIVED).exists(), shown
    crashed = stored.filter(note__startswith="Could not be applied")
    assert not crashed.exists(), (list(crashed.values_list("note", flat=True)), shown)


def exchange(seeded, body: bytes, content_type="application/json"):
    """POST `body` with the valid secret, apply what it stored, check every invariant, and return the response."""
    blast, sentinels, pristine = seeded
    target = _fresh_target(blast)
    last_event = WebhookEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

    response = CLIENT.post(URL, data=body, content_type=content_type, headers={"X-Webhook-Token": SECRET})

    shown = body[:300]
    assert response.status_code < 500, (response.status_code, content_type, len(body), shown)
    stored = WebhookEvent.objects.filter(pk__gt=last_event)
    if response.status_code == 200:
        assert response.json()["received"] == stored.count(), shown
        applied_all(stored, shown)
    else:
        assert not stored.exists(), (response.status_code, shown)
    if currently_in_test_context():  # --hypothesis-show-statistics shows what the fuzz reached
        event(f"answer {response.status_code}")
        for state in sorted(set(stored.values_list("state", flat=True))):
            event(f"stored {state}")
    assert _sentinel_state(sentinels) == pristine, shown
    assert not stored.filter(recipient_id__in=sentinels).exists(), shown

    target.refresh_from_db()
    chain = list(target.history.order_by("id").values_list("from_status", "to_status"))
    assert chain[0] == (Status.QUEUED, Status.PENDING)
    assert all(later[0] == earlier[1] for earlier, later in itertools.pairwise(chain)), chain
    assert all(can_move(from_status, to_status) for from_status, to_status in chain[1:]), chain
    assert chain[-1][1] == target.status
    applied = stored.filter(recipient_id=target.pk, state=State.APPLIED).count()
    assert len(chain) - 1 == applied, (chain, shown)
    if target.reply_text:
        assert stored.filter(recipient_id=target.pk, kind=WebhookEvent.Kind.REPLY).exists(), shown
    return response


# --- fuzz -----------------------------------------------------------------------------------------


@pytest.mark.django_db
@settings(max_examples=1000, deadline=None)
@given(value=events, ensure_ascii=st.booleans())
def test_arbitrary_json_is_never_a_server_error_and_changes_no_one(seeded, value, ensure_ascii):
    exchange(seeded, serialize(value, ensure_ascii))


@pytest.mark.django_db
@settings(max_examples=600, deadline=None)
@given(body=mutated_payloads())
def test_mutated_real_payloads_are_never_a_server_error_and_move_only_their_recipient_forward(seeded, body):
    response = exchange(seeded, body)
    if len(body) > django_settings.WEBHOOK_MAX_BYTES:
        assert response.status_code == 413


@pytest.mark.django_db
@settings(max_examples=400, deadline=None)
@given(
    body=st.one_of(st.binary(max_size=2_000), corrupted_json(), mutated_payloads()),
    content_type=content_types,
)
def test_raw_bytes_under_any_content_type_are_never_a_server_error(seeded, body, content_type):
    response = exchange(seeded, body, content_type)
    # Django's test client sends no Content-Type with an empty body.
    form = bool(body) and content_type.split(";")[0].strip().lower() in FORM_TYPES
    assert response.status_code in (200, 400, 413, 415)
    if len(body) > django_settings.WEBHOOK_MAX_BYTES:
        assert response.status_code == 413
    elif form:
        assert response.status_code == 415
    else:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            assert response.status_code == 400


# --- one test per category, with the exact answer -------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_nesting_just_under_the_size_cap_is_400(seeded, kind):
    cap = django_settings.WEBHOOK_MAX_BYTES
    if kind == "list":
        depth = cap // 2 - 1
        body = b"[" * depth + b"]" * depth
    else:
        depth = (cap - 1) // len('{"data":}')
        body = b'{"data":' * depth + b"1" + b"}" * depth
    assert cap - 10 <= len(body) <= cap

    response = exchange(seeded, body)

    assert response.status_code == 400 and "nested too deeply" in response.json()["error"]


@pytest.mark.django_db
def test_nesting_at_every_depth_up_to_1200_is_stored_or_refused_never_a_server_error(seeded):
    """Around Python's recursion limit the body parses, then storing it must not recurse too deep."""
    answers = {depth: exchange(seeded, b"[" * depth + b"]" * depth).status_code for depth in range(1, 1201)}

    assert set(answers.values()) == {200, 400}, {
        depth: code for depth, code in answers.items() if code >= 500
    }
    refused = [depth for depth, code in answers.items() if code == 400]
    assert refused == list(range(refused[0], 1201)), "one depth limit, not a patchwork"


@pytest.mark.django_db
@pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 413), (70_000, 413)])
def test_a_body_over_the_size_cap_is_413(seeded, extra, status):
    payload = json.dumps({"messageId": MESSAGE_ID, "status": "SERVER_ACK"}).encode()
    body = payload + b" " * (django_settings.WEBHOOK_MAX_BYTES - len(payload) + extra)

    response = exchange(seeded, body)

    assert response.status_code == status
    assert BlastRecipient.objects.get(message_id=MESSAGE_ID).status == (
        Status.SERVER_ACK if status == 200 else Status.PENDING
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b'{"messageId": "3EB0WM0F161ED1BD7A6532", "status": "SERVER_ACK", "x": "\xff"}',
        b'{"messageId": "3EB0WM0F161ED1BD7A6532", "status": "SERVER_ACK", "x": "\xc0\xaf"}',  # overlong
        b'{"messageId": "3EB0WM0F161ED1BD7A6532", "status": "SERVER_ACK", "x": "\xed\xa0\x80"}',  # surrogate
        b'{"messageId": "3EB0WM0F161ED1BD7A6532", "status": "SERVER_ACK", "x": "\xe2\x82"}',  # truncated
        b"\xfe\xff\x00{\x00}",  # UTF-16 with a byte-order mark
    ],
)
def test_invalid_utf8_is_400(seeded, body):
    response = exchange(seeded, body)

    assert response.status_code == 400 and "not UTF-8" in response.json()["error"]
    assert BlastRecipient.objects.get(message_id=MESSAGE_ID).status == Status.PENDING


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "Multipart/Form-Data"],
)
def test_a_form_content_type_is_415_even_around_a_valid_event(seeded, content_type):
    body = json.dumps({"messageId": MESSAGE_ID, "status": "SERVER_ACK"}).encode()

    response = exchange(seeded, body, content_type)

    assert response.status_code == 415
    assert BlastRecipient.objects.get(message_id=MESSAGE_ID).status == Status.PENDING


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["text/plain", "", "application/octet-stream"])
def test_json_under_another_content_type_is_still_read(seeded, content_type):
    body = json.dumps({"messageId": MESSAGE_ID, "status": "SERVER_ACK"}).encode()

    assert exchange(seeded, body, content_type).json() == {"received": 1}
    assert WebhookEvent.objects.get().state == State.APPLIED


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b'{"messageId": "3EB0WM0F161ED1BD7A6532", "status": 2, "timestamp": 1' + b"0" * 400 + b"}",
        b'{"key": {"id": "3EB0WM0F161ED1BD7A6532"}, "status": 2, "messageC2STimestamp": -1'
        + b"0" * 400
        + b"}",
        b'{"from": "60123456789@c.us", "message": "hi", "timestamp": 1' + b"0" * 400 + b"}",
    ],
)
def test_a_huge_integer_time_is_no_time_not_a_server_error(seeded, body):
    response = exchange(seeded, body)

    assert response.status_code == 200 and response.json() == {"received": 1}
    assert WebhookEvent.objects.values_list("state", "occurred_at").get() == (State.APPLIED, None)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b'{"messageId": "3EB0WM0F161ED1BD7A6532", "status": 2, "timestamp": 1e400}',
        b'{"messageId": "3EB0WM0F161ED1BD7A6532", "status": 2, "extra": [-1E309]}',
        b'{"messageId": "3EB0WM0F161ED1BD7A6532", "status": 2, "timestamp": Infinity}',
    ],
)
def test_a_number_beyond_float_range_is_400_like_infinity(seeded, body):
    """The database's JSON cannot store Infinity; a 503 would make WSAPME send it forever."""
    response = exchange(seeded, body)

    assert response.status_code == 400
    assert BlastRecipient.objects.get(message_id=MESSAGE_ID).status == Status.PENDING


# --- the WSGI application itself: charsets, encodings, framing ------------------------------------
# Django's test client builds the request before the application sees it, so it cannot send what a
# WSGI server passes on: any charset, a chunked body without Content-Length, a wrong length.

CHARSETS = (
    "utf-8", "UTF-8", "utf8", '"utf-8"', "latin-1", "us-ascii", "windows-1252", "utf-8-sig", "utf-16",
    "utf-16-le", "utf-32", "utf-7", "cp500", "rot13", "hex", "base64", "zlib_codec", "bz2_codec",
    "undefined", "punycode", "idna", "unicode_escape", "raw_unicode_escape", "no-such-charset", "",
)  # fmt: skip
charsets = st.one_of(
    st.sampled_from(CHARSETS), st.text(string.ascii_letters + string.digits + "-_.", max_size=12)
)
body_encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"])


@st.composite
def wsgi_requests(draw):
    """(body, environ) as a server would pass them: any charset, encoding, framing and way of giving the secret."""
    value = draw(st.one_of(events, st.sampled_from(FIXTURE_BODIES)))
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    body = text.encode(draw(body_encodings), "replace")
    mime = draw(
        st.sampled_from(["application/json", "text/plain", "application/octet-stream", "Application/JSON"])
    )
    charset = draw(charsets)
    environ = {"CONTENT_TYPE": f"{mime}; charset={charset}" if draw(st.booleans()) else mime}
    framing = draw(st.sampled_from(["length", "chunked", "short", "long", "missing"]))
    if framing == "chunked":  # gunicorn decodes chunking, leaves no length and says the input ends
        environ |= {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}
    elif framing != "missing":
        environ["CONTENT_LENGTH"] = str(len(body) + {"length": 0, "short": -1, "long": 5}[framing])
    way = draw(st.sampled_from(["query", "encoded query", "header", "basic"]))
    if way == "query":
        environ["QUERY_STRING"] = f"token={SECRET}"
    elif way == "encoded query":
        environ["QUERY_STRING"] = "token=" + "".join(
            f"%{ord(c):02X}" if draw(st.booleans()) else c for c in SECRET
        )
    elif way == "header":
        environ["HTTP_X_WEBHOOK_TOKEN"] = SECRET
    else:
        environ["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(f"wsapme:{SECRET}".encode()).decode()
    return body, environ


def wsgi_post(body: bytes, extra: dict) -> tuple[int, bytes]:
    environ = {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": URL, "QUERY_STRING": "",
        "SERVER_NAME": "testserver", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "testserver",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False, **extra,
    }  # fmt: skip
    statuses = []
    # As Django's test client does: the request must not close the test's database connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        answer = application(environ, lambda status, headers, exc_info=None: statuses.append(status))
        content = b"".join(answer)
        getattr(answer, "close", lambda: None)()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return int(statuses[0].split()[0]), content


@pytest.mark.django_db
@settings(max_examples=3200, deadline=None)
@given(request=wsgi_requests())
def test_any_charset_encoding_and_framing_through_the_wsgi_application_is_never_a_server_error(
    seeded, request
):
    body, environ = request
    _, sentinels, pristine = seeded
    last_event = WebhookEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

    status, content = wsgi_post(body, environ)

    shown = (environ, body[:200])
    assert status < 500, (status, content[:300], shown)
    if currently_in_test_context():
        event(f"answer {status}")
    stored = WebhookEvent.objects.filter(pk__gt=last_event)
    if status == 200:
        assert json.loads(content)["received"] == stored.count(), shown
        applied_all(stored, shown)
    else:
        assert not stored.exists(), (status, shown)
    assert _sentinel_state(sentinels) == pristine, shown
