import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.client import RemoteDisconnected

import pytest
import requests
import responses
from django.core.exceptions import ImproperlyConfigured
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from blasts.gateway.client import Outcome, SendResult, WsapmeClient, WsapmeError, get_client

from .conftest import free_port

BASE = "https://api.wsapme.test"
SEND_URL = f"{BASE}/v1/sendMessage2"
STATUS_URL = f"{BASE}/v1/getMessageStatus"
MESSAGE_ID = "3EB0WM0F161ED1BD7A6532"

# The success answer observed on the real service.
SENT_ANSWER = {
    "success": True,
    "message": "Sent Successfully",
    "data": {
        "key": {"remoteJid": "60123456789@s.whatsapp.net", "fromMe": True, "id": MESSAGE_ID},
        "message": {"extendedTextMessage": {"text": "Hello", "contextInfo": {"expiration": 0}}},
        "messageTimestamp": "1768716040",
        "status": "PENDING",
    },
    "messageId": MESSAGE_ID,
}


def client(token="t0ken", **kwargs) -> WsapmeClient:
    return WsapmeClient(BASE, token, **kwargs)


def send(wsapme: WsapmeClient | None = None) -> SendResult:
    return (wsapme or client()).send(device="5850", to="+60123456789", message="Hello")


def closed_port_url() -> str:
    """A local URL nothing listens on: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}"


def queue_fault(sandbox, fault: str, endpoint: str = "send") -> None:
    answer = requests.post(
        f"{sandbox.url}/_sandbox/faults", json={"fault": fault, "count": 1, "endpoint": endpoint}, timeout=5
    )
    answer.raise_for_status()


# --- send: answers ----------------------------------------------------------------------


@responses.activate
def test_send_success_takes_the_top_level_message_id_and_keeps_the_raw_answer():
    responses.post(SEND_URL, json=SENT_ANSWER)

    result = send()

    assert result == SendResult(Outcome.SENT, message_id=MESSAGE_ID, http_status=200, raw=SENT_ANSWER)


@responses.activate
def test_send_success_falls_back_to_data_key_id():
    answer = {key: value for key, value in SENT_ANSWER.items() if key != "messageId"}
    responses.post(SEND_URL, json=answer)

    result = send()

    assert (result.outcome, result.message_id) == (Outcome.SENT, MESSAGE_ID)


@responses.activate
def test_old_flat_answer_without_success_key_is_sent():
    answer = {
        "messageId": MESSAGE_ID,
        "id_device": "5850",
        "jid": "60123456789@s.whatsapp.net",
        "status": "PENDING",
    }
    responses.post(SEND_URL, json=answer)

    result = send()

    assert (result.outcome, result.message_id, result.kind) == (Outcome.SENT, MESSAGE_ID, "")


@pytest.mark.parametrize(
    ("reason", "outcome", "kind"),
    [
        ("Invalid number: not registered on WhatsApp", Outcome.REJECTED, "invalid_number"),
        ("Phone is not registered", Outcome.REJECTED, "invalid_number"),
        ("Invalid JID", Outcome.REJECTED, "invalid_number"),
        ("Message is empty", Outcome.REJECTED, "rejected"),
        ("Unauthorized: invalid token", Outcome.BLOCKED, "unauthorized"),
        ("Forbidden", Outcome.BLOCKED, "unauthorized"),
        ("Device offline: reconnect the device in the dashboard", Outcome.BLOCKED, "device_offline"),
        ("Device disconnected", Outcome.BLOCKED, "device_offline"),
        ("Device not connected, number cannot send", Outcome.BLOCKED, "device_offline"),
        ("Session logged out", Outcome.BLOCKED, "device_offline"),
        ("Too many requests", Outcome.NOT_SENT, "rate_limited"),
    ],
)
@responses.activate
def test_success_false_with_http_200_is_classified_by_its_reason(reason, outcome, kind):
    responses.post(SEND_URL, json={"success": False, "message": reason})

    result = send()

    assert (result.outcome, result.kind, result.reason) == (outcome, kind, reason)
    assert result.message_id is None
    assert result.http_status == 200
    assert result.raw == {"success": False, "message": reason}


@responses.activate
def test_success_false_without_a_reason_is_rejected_and_says_so():
    responses.post(SEND_URL, json={"success": False})

    result = send()

    assert (result.outcome, result.kind) == (Outcome.REJECTED, "rejected")
    assert result.reason == "success:false without a reason"


@responses.activate
def test_non_json_200_is_unknown_and_keeps_the_text_truncated():
    body = "<html><body>502 Bad Gateway</body></html>" + "x" * 5000
    responses.post(SEND_URL, body=body, content_type="text/html")

    result = send()

    assert (result.outcome, result.kind, result.http_status) == (Outcome.UNKNOWN, "bad_answer", 200)
    assert result.raw == body[:2000]
    assert result.message_id is None


@responses.activate
def test_json_that_is_not_an_object_is_unknown():
    responses.post(SEND_URL, json=[MESSAGE_ID])

    result = send()

    assert (result.outcome, result.kind, result.raw) == (Outcome.UNKNOWN, "bad_answer", [MESSAGE_ID])


@pytest.mark.parametrize(
    "answer",
    [
        {"success": True, "message": "Sent Successfully"},
        {"success": True, "messageId": "", "data": {"key": {"id": None}}},
        {"status": "PENDING"},
    ],
)
@responses.activate
def test_success_without_a_message_id_is_unknown_never_sent(answer):
    responses.post(SEND_URL, json=answer)

    result = send()

    assert (result.outcome, result.kind, result.message_id) == (Outcome.UNKNOWN, "bad_answer", None)


@pytest.mark.parametrize(
    "answer",
    [
        {"success": False, "message": "Failed", "messageId": MESSAGE_ID},
        {"success": "true", "messageId": MESSAGE_ID},
    ],
)
@responses.activate
def test_contradictory_answer_with_an_id_is_unknown_and_keeps_the_id(answer):
    responses.post(SEND_URL, json=answer)

    result = send()

    assert (result.outcome, result.kind, result.message_id) == (Outcome.UNKNOWN, "bad_answer", MESSAGE_ID)


# --- send: HTTP errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome", "kind"),
    [
        (400, Outcome.REJECTED, "rejected"),
        (404, Outcome.REJECTED, "rejected"),
        (422, Outcome.REJECTED, "rejected"),
        (401, Outcome.BLOCKED, "unauthorized"),
        (403, Outcome.BLOCKED, "unauthorized"),
        (408, Outcome.NOT_SENT, "unavailable"),
        (429, Outcome.NOT_SENT, "rate_limited"),
        (503, Outcome.NOT_SENT, "unavailable"),
        (500, Outcome.UNKNOWN, "bad_answer"),
        (502, Outcome.UNKNOWN, "bad_answer"),
        (504, Outcome.UNKNOWN, "bad_answer"),
        (302, Outcome.UNKNOWN, "bad_answer"),
    ],
)
@responses.activate
def test_http_error_status_maps_to_outcome(status, outcome, kind):
    responses.post(SEND_URL, body="<html>error</html>", status=status, headers={"Location": BASE})

    result = send()

    assert (result.outcome, result.kind, result.http_status) == (outcome, kind, status)
    assert result.reason == f"HTTP {status}"
    assert result.raw == "<html>error</html>"
    assert len(responses.calls) == 1  # no retry, no redirect followed


@responses.activate
def test_http_error_reason_includes_the_gateway_message():
    responses.post(SEND_URL, json={"success": False, "message": "Invalid phone"}, status=400)

    result = send()

    assert (result.outcome, result.reason) == (Outcome.REJECTED, "HTTP 400: Invalid phone")
    assert result.raw == {"success": False, "message": "Invalid phone"}


@responses.activate
def test_429_carries_retry_after_in_seconds():
    responses.post(SEND_URL, json={"success": False}, status=429, headers={"Retry-After": "7"})

    result = send()

    assert (result.outcome, result.retry_after) == (Outcome.NOT_SENT, 7.0)


@responses.activate
def test_503_carries_retry_after_from_an_http_date():
    when = datetime.now(UTC) + timedelta(seconds=120)
    responses.post(SEND_URL, body="", status=503, headers={"Retry-After": format_datetime(when, usegmt=True)})

    result = send()

    assert result.outcome == Outcome.NOT_SENT
    assert 100 <= result.retry_after <= 120


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("86400", 3600.0),  # capped at an hour
        ("7", 7.0),
        ("-5", None),  # not delay-seconds (RFC 9110: digits only), as urllib3 reads it
        ("0.5", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # already past
        ("soon", None),
        ("nan", None),
    ],
)
@responses.activate
def test_retry_after_is_capped_and_tolerates_nonsense(header, expected):
    responses.post(SEND_URL, body="", status=429, headers={"Retry-After": header})

    assert send().retry_after == expected


@responses.activate
def test_no_retry_after_header_means_none():
    responses.post(SEND_URL, body="", status=429)

    assert send().retry_after is None


# --- send: transport --------------------------------------------------------------------


def test_connection_refused_is_not_sent():
    result = WsapmeClient(closed_port_url(), "t0ken", connect_timeout=2).send(
        device="5850", to="+60123456789", message="Hello"
    )

    assert (result.outcome, result.kind) == (Outcome.NOT_SENT, "unavailable")
    assert result.http_status is None


def test_read_timeout_is_unknown_never_not_sent(wsapme_sandbox):
    wsapme_sandbox.config.update({"stall": 1.0})
    queue_fault(wsapme_sandbox, "stall")
    wsapme = WsapmeClient(wsapme_sandbox.url, "sandbox-token", read_timeout=0.3)

    result = send(wsapme)

    assert (result.outcome, result.kind) == (Outcome.UNKNOWN, "timeout")
    assert result.reason == "read timed out after 0.3s"
    assert wsapme_sandbox.calls[-1]["message_id"]  # the gateway did take it


def test_connection_dropped_after_processing_is_unknown(wsapme_sandbox):
    queue_fault(wsapme_sandbox, "drop_response")

    result = send(WsapmeClient(wsapme_sandbox.url, "sandbox-token"))

    assert (result.outcome, result.kind) == (Outcome.UNKNOWN, "bad_answer")
    assert result.reason.startswith("no complete answer")
    assert wsapme_sandbox.calls[-1]["message_id"]


def _refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    try:
        raise MaxRetryError(None, "/v1/sendMessage2", reason) from reason
    except MaxRetryError as exc:
        return requests.ConnectionError(exc)


@pytest.mark.parametrize(
    ("error", "outcome", "kind"),
    [
        (requests.ConnectTimeout("connect timed out"), Outcome.NOT_SENT, "unavailable"),
        (_refused(), Outcome.NOT_SENT, "unavailable"),
        (requests.ReadTimeout("read timed out"), Outcome.UNKNOWN, "timeout"),
        (
            requests.ConnectionError(ProtocolError("Connection aborted.", RemoteDisconnected("closed"))),
            Outcome.UNKNOWN,
            "bad_answer",
        ),
        (requests.ConnectionError(ConnectionResetError(104, "reset")), Outcome.UNKNOWN, "bad_answer"),
        (requests.exceptions.ChunkedEncodingError("broken"), Outcome.UNKNOWN, "bad_answer"),
    ],
)
@responses.activate
def test_transport_errors_tell_not_written_from_maybe_written(error, outcome, kind):
    responses.post(SEND_URL, body=error)

    result = send()

    assert (result.outcome, result.kind, result.http_status, result.raw) == (outcome, kind, None, None)


@responses.activate
def test_dropped_connection_reason_names_the_root_cause():
    responses.post(
        SEND_URL, body=requests.ConnectionError(ProtocolError("Connection aborted.", RemoteDisconnected("x")))
    )

    assert send().reason == "no complete answer: RemoteDisconnected"


# --- send: the request ------------------------------------------------------------------


@responses.activate
def test_send_posts_the_token_header_json_body_and_both_timeouts():
    responses.post(SEND_URL, json=SENT_ANSWER)
    wsapme = WsapmeClient(f"{BASE}/", "t0ken", connect_timeout=3, read_timeout=7)

    wsapme.send(device="5850", to="+60123456789", message="Hello {name}")

    (call,) = responses.calls
    assert call.request.url == SEND_URL
    assert call.request.headers["x-wsapme-token"] == "t0ken"
    assert call.request.headers["Content-Type"] == "application/json"
    assert json.loads(call.request.body) == {
        "device": "5850",
        "to": "+60123456789",
        "message": "Hello {name}",
    }
    assert call.request.req_kwargs["timeout"] == (3, 7)


def test_send_uses_the_given_session_with_timeout_and_no_redirects():
    seen = {}

    class Session:
        def post(self, url, **kwargs):
            seen.update(kwargs, url=url)
            raise requests.ConnectTimeout("stub")

    result = WsapmeClient(BASE, "t0ken", connect_timeout=1.5, read_timeout=9, session=Session()).send(
        device="5850", to="+60123456789", message="Hello"
    )

    assert result.outcome == Outcome.NOT_SENT
    assert result.reason == "connect timed out after 1.5s"
    assert seen["url"] == SEND_URL
    assert seen["timeout"] == (1.5, 9)
    assert seen["allow_redirects"] is False


@pytest.mark.parametrize(
    ("fault", "outcome", "kind"),
    [
        (None, Outcome.SENT, ""),
        ("invalid_number", Outcome.REJECTED, "invalid_number"),
        ("unauthorized", Outcome.BLOCKED, "unauthorized"),
        ("device_offline", Outcome.BLOCKED, "device_offline"),
        ("rate_limited", Outcome.NOT_SENT, "rate_limited"),
        ("unavailable", Outcome.NOT_SENT, "unavailable"),
        ("not_json", Outcome.UNKNOWN, "bad_answer"),
    ],
)
def test_sandbox_answers_are_classified(wsapme_sandbox, fault, outcome, kind):
    if fault:
        queue_fault(wsapme_sandbox, fault)

    result = send(WsapmeClient(wsapme_sandbox.url, "sandbox-token"))

    assert (result.outcome, result.kind) == (outcome, kind)
    assert (result.message_id is not None) == (outcome == Outcome.SENT)
    # Only what the gateway did not take may be retried.
    taken = wsapme_sandbox.calls[-1]["message_id"] is not None
    assert taken == (outcome in (Outcome.SENT, Outcome.UNKNOWN))
    if fault in ("rate_limited", "unavailable"):
        assert result.retry_after == 1.0


def test_invalid_url_is_refused_at_construction():
    with pytest.raises(ValueError, match="http"):
        WsapmeClient("api.wsapme.com", "t0ken")


# --- status -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"success": True, "id": MESSAGE_ID, "status": "DELIVERY_ACK"}, "DELIVERY_ACK"),
        ({"success": True, "data": {"id": MESSAGE_ID, "status": "READ_ACK"}}, "READ_ACK"),
        ({"success": True, "data": {"status": 3}}, 3),
        ({"success": True, "status": 0}, 0),  # ERROR is a status even though it is falsy
        ({"id": MESSAGE_ID, "ack": 4}, 4),
        ({"success": True, "data": {"ack": 2}}, 2),
        ({"success": True, "status": "success", "data": {"status": "SERVER_ACK"}}, "SERVER_ACK"),
    ],
)
@responses.activate
def test_status_is_found_at_the_top_under_data_or_as_ack(answer, status):
    responses.post(STATUS_URL, json=answer)

    result = client().message_status(device="5850", message_id=MESSAGE_ID)

    assert (result.known, result.status, result.raw) == (True, status, answer)


@pytest.mark.parametrize(
    "answer",
    [
        {"success": True, "status": "READ_ACK", "messageC2STimestamp": "1634061785"},
        {"success": True, "status": "READ_ACK", "messageC2STimestamp": 1634061785},
        {"success": True, "data": {"status": "READ_ACK", "messageC2STimestamp": "1634061785"}},
        {"success": True, "data": {"status": "READ_ACK", "messageC2STimestamp": 1634061785}},
    ],
)
@responses.activate
def test_status_time_is_an_aware_utc_datetime_from_either_level(answer):
    responses.post(STATUS_URL, json=answer)

    result = client().message_status(device="5850", message_id=MESSAGE_ID)

    assert result.occurred_at == datetime(2021, 10, 12, 18, 3, 5, tzinfo=UTC)


@responses.activate
def test_status_without_a_time_or_with_nonsense_has_none():
    responses.post(STATUS_URL, json={"success": True, "status": "PENDING", "messageC2STimestamp": "later"})

    assert client().message_status(device="5850", message_id=MESSAGE_ID).occurred_at is None


@responses.activate
def test_status_unknown_right_now_is_not_known_and_not_an_error():
    responses.post(STATUS_URL, json={"success": False, "data": {}})

    result = client().message_status(device="5850", message_id=MESSAGE_ID)

    assert (result.known, result.status, result.occurred_at) == (False, None, None)
    assert result.raw == {"success": False, "data": {}}


@responses.activate
def test_status_posts_device_and_message_id_with_the_token():
    responses.post(STATUS_URL, json={"success": True, "status": "PENDING"})

    client(connect_timeout=2, read_timeout=4).message_status(device="5850", message_id=MESSAGE_ID)

    (call,) = responses.calls
    assert json.loads(call.request.body) == {"device": "5850", "messageId": MESSAGE_ID}
    assert call.request.headers["x-wsapme-token"] == "t0ken"
    assert call.request.req_kwargs["timeout"] == (2, 4)


@responses.activate
def test_status_429_raises_with_retry_after_and_http_status():
    responses.post(
        STATUS_URL,
        json={"success": False, "message": "Too many requests"},
        status=429,
        headers={"Retry-After": "3"},
    )

    with pytest.raises(WsapmeError) as caught:
        client().message_status(device="5850", message_id=MESSAGE_ID)

    assert (caught.value.http_status, caught.value.retry_after) == (429, 3.0)
    assert str(caught.value) == "WSAPME status check failed: HTTP 429: Too many requests"


@responses.activate
def test_status_non_json_answer_raises():
    responses.post(STATUS_URL, body="<html>oops</html>")

    with pytest.raises(WsapmeError, match="not a JSON object"):
        client().message_status(device="5850", message_id=MESSAGE_ID)


def test_status_transport_error_raises_chained_to_the_original():
    wsapme = WsapmeClient(closed_port_url(), "t0ken", connect_timeout=2)

    with pytest.raises(WsapmeError) as caught:
        wsapme.message_status(device="5850", message_id=MESSAGE_ID)

    assert isinstance(caught.value.__cause__, requests.ConnectionError)
    assert caught.value.http_status is None
    assert "could not connect" in str(caught.value)


def test_status_against_the_sandbox_is_known(wsapme_sandbox):
    wsapme = WsapmeClient(wsapme_sandbox.url, "sandbox-token")
    sent = send(wsapme)

    result = wsapme.message_status(device="5850", message_id=sent.message_id)

    assert result.known
    assert result.status in {"PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ_ACK", "ERROR"}
    assert result.occurred_at.tzinfo is UTC


# --- get_client ---------------------------------------------------------------------------


def test_get_client_uses_the_real_token_and_timeouts_from_settings(settings):
    settings.WSAPME_BASE_URL = "https://api.wsapme.com"
    settings.WSAPME_TOKEN = "real-token"
    settings.WSAPME_SANDBOX = False
    settings.WSAPME_CONNECT_TIMEOUT = 2
    settings.WSAPME_READ_TIMEOUT = 30

    wsapme = get_client()

    assert (wsapme.base_url, wsapme._token) == ("https://api.wsapme.com", "real-token")
    assert (wsapme.connect_timeout, wsapme.read_timeout) == (2.0, 30.0)


def test_get_client_defaults_timeouts_when_unset(settings):
    settings.WSAPME_TOKEN = "real-token"
    settings.WSAPME_SANDBOX = False
    del settings.WSAPME_CONNECT_TIMEOUT
    del settings.WSAPME_READ_TIMEOUT

    wsapme = get_client()

    assert (wsapme.connect_timeout, wsapme.read_timeout) == (5.0, 20.0)


def test_get_client_in_sandbox_mode_uses_the_sandbox_token(settings):
    settings.WSAPME_BASE_URL = "http://127.0.0.1:8900"
    settings.WSAPME_TOKEN = ""
    settings.WSAPME_SANDBOX = True
    settings.WSAPME_SANDBOX_TOKEN = "sandbox-token"

    wsapme = get_client()

    assert (wsapme.base_url, wsapme._token) == ("http://127.0.0.1:8900", "sandbox-token")


def test_get_client_without_a_token_outside_sandbox_mode_is_a_configuration_error(settings):
    settings.WSAPME_TOKEN = ""
    settings.WSAPME_SANDBOX = False

    with pytest.raises(ImproperlyConfigured):
        get_client()


# --- the token ----------------------------------------------------------------------------

SECRET = "tok-SECRET-5f0c9a7e"


def test_repr_shows_the_base_url_only():
    assert repr(client(SECRET)) == f"WsapmeClient('{BASE}')"


def test_token_never_leaks_into_reasons_errors_repr_or_logs(wsapme_sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    results, errors = [], []
    wsapme = client(SECRET)
    mocked = [
        {"json": {"success": False, "message": f"Unauthorized: invalid token {SECRET}"}},
        {"json": {"success": False, "message": "Device offline"}},
        {"json": {"success": False, "message": "Invalid number"}},
        {"json": {"success": False, "message": f"bad token {SECRET}"}, "status": 401},
        {"json": {"success": False}, "status": 403},
        {"json": {"success": False, "message": f"Invalid phone {SECRET}"}, "status": 400},
        {"json": {"success": False}, "status": 429, "headers": {"Retry-After": "5"}},
        {"body": "", "status": 503},
        {"json": {"success": False, "message": SECRET}, "status": 500},
        {"body": f"<html>{SECRET}</html>"},
        {"json": {"success": True}},
        {"body": requests.ConnectTimeout(SECRET)},
        {"body": requests.ReadTimeout(SECRET)},
        {"body": requests.ConnectionError(ProtocolError("Connection aborted.", RemoteDisconnected(SECRET)))},
    ]
    with responses.RequestsMock() as mock:
        for answer in mocked:
            mock.post(SEND_URL, **answer)
            results.append(send(wsapme))
        mock.post(STATUS_URL, json={"message": f"no {SECRET}"}, status=429)
        with pytest.raises(WsapmeError) as caught:
            wsapme.message_status(device="5850", message_id=MESSAGE_ID)
        errors.append(caught.value)
    # Real sockets: refused, stalled and dropped.
    refused = WsapmeClient(closed_port_url(), SECRET)
    results.append(send(refused))
    with pytest.raises(WsapmeError) as caught:
        refused.message_status(device="5850", message_id=MESSAGE_ID)
    errors.append(caught.value)
    wsapme_sandbox.config.update({"token": SECRET, "stall": 1.0})
    sandboxed = WsapmeClient(wsapme_sandbox.url, SECRET, read_timeout=0.3)
    for fault in ("stall", "drop_response"):
        queue_fault(wsapme_sandbox, fault)
        results.append(send(sandboxed))

    kinds = {result.kind for result in results}
    assert kinds == {
        "invalid_number",
        "rejected",
        "unauthorized",
        "device_offline",
        "rate_limited",
        "unavailable",
        "timeout",
        "bad_answer",
    }
    assert all(SECRET not in result.reason for result in results)
    assert all(SECRET not in str(error) for error in errors)
    assert all(SECRET not in repr(each) for each in (wsapme, refused, sandboxed))
    assert "WSAPME send via device" in caplog.text
    assert SECRET not in caplog.text


def test_one_client_keeps_a_connection_per_thread_for_many_threads(wsapme_sandbox, caplog):
    # urllib3 keeps 10 by default: thread 11 and up would open and drop a connection per call.
    client = WsapmeClient(wsapme_sandbox.url, wsapme_sandbox.config.token)
    barrier = threading.Barrier(24)

    def work(n):
        barrier.wait()
        for k in range(3):
            client.send(device="5850", to=f"+6012{n:03d}{k:04d}", message="Hi")

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        threads = [threading.Thread(target=work, args=(n,)) for n in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert "Connection pool is full" not in caplog.text
    assert len(wsapme_sandbox.calls) == 72


def test_the_proxy_and_ca_bundle_from_the_environment_are_read_once(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/company.pem")
    client = WsapmeClient(BASE, "t0k")
    monkeypatch.setattr(
        requests.utils, "get_environ_proxies", lambda *a, **k: pytest.fail("environment read on a call")
    )
    session = client._session
    assert session.proxies["https"] == "http://proxy.internal:3128"
    assert session.verify == "/etc/ssl/certs/company.pem"
    request = session.merge_environment_settings(SEND_URL, {}, None, None, None)
    assert request["proxies"]["https"] == "http://proxy.internal:3128"
