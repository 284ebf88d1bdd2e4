"""The WSAPME sandbox: every shape, the progression, each fault knob, webhook delivery."""

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.conf import settings
from django.core.management import CommandError, call_command
from django.urls import reverse

from blasts.gateway.sandbox import Sandbox, _Handler
from blasts.gateway.sandbox_messages import SandboxConfig

from .conftest import free_port

TOKEN = {"x-wsapme-token": "sandbox-token"}


def send(sandbox, to="+60123456789", endpoint="sendMessage2", headers=TOKEN, timeout=5, **body):
    body = {"device": "5850", "to": to, "message": "Hello Aisyah", **body}
    return requests.post(f"{sandbox.url}/v1/{endpoint}", json=body, headers=headers, timeout=timeout)


def status(sandbox, message_id):
    answer = requests.post(
        f"{sandbox.url}/v1/getMessageStatus", json={"device": "5850", "messageId": message_id}, headers=TOKEN
    ).json()
    return answer.get("status", answer.get("data", {}).get("status"))


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


class Receiver:
    """A webhook endpoint that keeps what it was sent."""

    def __init__(self):
        self.events: list[dict] = []
        self.headers: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.events.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/webhook/wsapme?token=t0ken"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def for_message(self, message_id):
        return [
            e
            for e in self.events
            if message_id in (e.get("key", {}).get("id"), e.get("messageId"), e.get("id"))
        ]


@pytest.fixture
def receiver(wsapme_sandbox):
    receiver = Receiver()
    wsapme_sandbox.config.update({"webhook_url": receiver.url})
    yield receiver
    receiver.httpd.shutdown()


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["+60123456789", "60123456789"])
def test_send_answers_with_the_observed_success_shape(wsapme_sandbox, to):
    answer = send(wsapme_sandbox, to=to)

    assert answer.status_code == 200
    body = answer.json()
    assert (body["success"], body["message"], body["data"]["status"]) == (
        True,
        "Sent Successfully",
        "PENDING",
    )
    assert body["messageId"] == body["data"]["key"]["id"] and body["messageId"].startswith("3EB0")
    assert body["data"]["key"]["remoteJid"] == "60123456789@s.whatsapp.net"
    assert body["data"]["key"]["fromMe"] is True
    assert body["data"]["message"]["extendedTextMessage"]["text"] == "Hello Aisyah"
    assert body["data"]["messageTimestamp"].isdigit()


def test_answers_are_not_held_back_by_nagles_algorithm(wsapme_sandbox, monkeypatch):
    # Headers and body are two writes: with Nagle on, the body waits ~40 ms for the client's ACK.
    seen = []
    setup = _Handler.setup

    def record(handler):
        setup(handler)
        seen.append(handler.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(_Handler, "setup", record)
    assert send(wsapme_sandbox).status_code == 200
    assert seen and all(seen)


def test_every_send_gets_a_fresh_message_id(wsapme_sandbox):
    ids = {send(wsapme_sandbox).json()["messageId"] for _ in range(20)}
    assert len(ids) == 20


def test_the_older_send_endpoint_answers_flat(wsapme_sandbox):
    body = send(wsapme_sandbox, endpoint="sendMessage").json()
    assert set(body) >= {"messageId", "id_device", "jid", "status"}
    assert (body["id_device"], body["jid"], body["status"]) == (
        "5850",
        "60123456789@s.whatsapp.net",
        "PENDING",
    )


@pytest.mark.parametrize("headers", [{}, {"x-wsapme-token": "wrong"}])
def test_a_missing_or_wrong_token_is_refused_with_http_200(wsapme_sandbox, headers):
    answer = send(wsapme_sandbox, headers=headers)
    assert answer.status_code == 200
    assert answer.json() == {"success": False, "message": "Unauthorized: invalid token"}
    assert wsapme_sandbox.messages == {}


@pytest.mark.parametrize("to", ["12", "not a number", ""])
def test_an_invalid_number_is_a_failure_answer(wsapme_sandbox, to):
    body = send(wsapme_sandbox, to=to).json()
    assert body["success"] is False and "Invalid number" in body["message"]


def test_a_body_that_is_not_json_is_a_400(wsapme_sandbox):
    answer = requests.post(f"{wsapme_sandbox.url}/v1/sendMessage2", data=b"{nope", headers=TOKEN)
    assert answer.status_code == 400


def test_status_of_an_unknown_message_is_unknown_not_failed(wsapme_sandbox):
    answer = requests.post(
        f"{wsapme_sandbox.url}/v1/getMessageStatus", json={"messageId": "NOPE"}, headers=TOKEN
    )
    assert answer.json() == {"success": False, "data": {}}


def test_status_is_given_at_the_top_or_under_data_with_a_delivery_time(wsapme_sandbox):
    shapes = set()
    for _ in range(20):
        message_id = send(wsapme_sandbox).json()["messageId"]
        answer = requests.post(
            f"{wsapme_sandbox.url}/v1/getMessageStatus", json={"messageId": message_id}, headers=TOKEN
        ).json()
        assert answer["success"] is True
        found = answer.get("data", answer)
        assert found["status"] == "PENDING" and isinstance(found["messageC2STimestamp"], int)
        shapes.add("data" if "data" in answer else "top")
    assert shapes == {"data", "top"}


def test_status_can_be_answered_unknown_on_purpose(wsapme_sandbox):
    message_id = send(wsapme_sandbox).json()["messageId"]
    wsapme_sandbox.config.update({"p_status_unknown": 1.0})
    assert status(wsapme_sandbox, message_id) is None


# --- progression ----------------------------------------------------------------------------


def test_a_message_moves_forward_to_read_over_time(wsapme_sandbox):
    wsapme_sandbox.config.update(
        {"p_error": 0, "p_delivered": 1, "p_read": 1, "p_receipts_off": 0, "read_after": 0.1}
    )
    message_id = send(wsapme_sandbox).json()["messageId"]
    seen = [status(wsapme_sandbox, message_id)]
    wait_for(lambda: seen.append(status(wsapme_sandbox, message_id)) or seen[-1] == "READ_ACK")

    order = ["PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ_ACK"]
    assert seen[0] == "PENDING"
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ({"p_error": 1.0}, ["ERROR"]),
        ({"p_error": 0, "p_delivered": 0}, ["SERVER_ACK"]),
        ({"p_error": 0, "p_delivered": 1, "p_read": 0}, ["SERVER_ACK", "DELIVERY_ACK"]),
        (
            {"p_error": 0, "p_delivered": 1, "p_read": 1, "p_receipts_off": 0},
            ["SERVER_ACK", "DELIVERY_ACK", "READ_ACK"],
        ),
        # Read receipts off: no READ_ACK, yet the recipient can still reply.
        ({"p_error": 0, "p_delivered": 1, "p_read": 1, "p_receipts_off": 1}, ["SERVER_ACK", "DELIVERY_ACK"]),
    ],
)
def test_probabilities_shape_the_timeline(wsapme_sandbox, knobs, expected):
    wsapme_sandbox.config.update(knobs)
    message = wsapme_sandbox.messages[send(wsapme_sandbox).json()["messageId"]]
    assert [name for _, name in message.timeline] == expected


def test_replies_come_after_reading_and_some_are_opt_outs(wsapme_sandbox):
    wsapme_sandbox.config.update({"p_error": 0, "p_delivered": 1, "p_read": 1, "p_reply": 1, "p_opt_out": 1})
    message = wsapme_sandbox.messages[send(wsapme_sandbox).json()["messageId"]]
    assert message.reply[0] > message.timeline[-1][0]
    assert message.reply[1] in ("STOP", "BERHENTI", "unsubscribe")


def test_progression_is_reproducible_with_a_seed():
    def timelines(seed):
        sandbox = Sandbox(SandboxConfig(seed=seed)).start()
        try:
            result = []
            for n in range(40):
                message_id = send(sandbox, to=f"+6012{n:07d}").json()["messageId"]
                message = sandbox.messages[message_id]
                result.append((message.timeline, message.reply))
            return result
        finally:
            sandbox.stop()

    assert timelines(7) == timelines(7)
    assert timelines(7) != timelines(8)


# --- webhooks -------------------------------------------------------------------------------


def test_acks_and_replies_are_posted_to_the_webhook(wsapme_sandbox, receiver):
    wsapme_sandbox.config.update(
        {"p_error": 0, "p_delivered": 1, "p_read": 1, "p_receipts_off": 0, "p_reply": 1, "p_opt_out": 0}
    )
    wsapme_sandbox.config.update({"ack_shapes": ["nested"], "webhook_headers": {"X-Webhook-Token": "s3"}})
    message_id = send(wsapme_sandbox).json()["messageId"]

    wait_for(lambda: len(receiver.events) == 4)
    acks = receiver.for_message(message_id)
    assert [e["status"] for e in acks] == ["SERVER_ACK", "DELIVERY_ACK", "READ_ACK"]
    assert acks[0]["key"] == {"remoteJid": "60123456789@s.whatsapp.net", "fromMe": True, "id": message_id}
    assert acks[0]["messageC2STimestamp"].isdigit()
    reply = receiver.events[-1]
    assert reply["from"] == "60123456789@c.us" and reply["type"] == "text" and reply["message"]
    assert all(h["X-Webhook-Token"] == "s3" for h in receiver.headers)
    wait_for(lambda: len(wsapme_sandbox.deliveries) == 4)  # each is noted once its answer is read
    assert [d["http_status"] for d in wsapme_sandbox.deliveries] == [200] * 4


@pytest.mark.parametrize(
    ("shape", "keys"),
    [
        ("nested_numeric", {"key", "status", "messageTimestamp", "messageC2STimestamp"}),
        ("flat", {"messageId", "status", "timestamp"}),
        ("flat_ack", {"id", "ack", "timestamp"}),
    ],
)
def test_each_ack_shape(wsapme_sandbox, receiver, shape, keys):
    wsapme_sandbox.config.update({"p_error": 0, "p_delivered": 1, "p_read": 0, "ack_shapes": [shape]})
    send(wsapme_sandbox)
    wait_for(lambda: len(receiver.events) == 2)
    assert all(set(event) == keys for event in receiver.events)
    numbers = [event.get("ack", event.get("status")) for event in receiver.events]
    assert numbers == ([2, 3] if shape != "flat" else ["SERVER_ACK", "DELIVERY_ACK"])


def test_duplicates_deliver_each_event_twice(wsapme_sandbox, receiver):
    wsapme_sandbox.config.update({"p_error": 0, "p_delivered": 1, "p_read": 0, "p_duplicate": 1.0})
    send(wsapme_sandbox)
    wait_for(lambda: len(receiver.events) == 4)
    time.sleep(0.2)
    assert len(receiver.events) == 4
    assert (
        sorted(json.dumps(e, sort_keys=True) for e in receiver.events[::2])
        == sorted(json.dumps(e, sort_keys=True) for e in receiver.events[1::2])
        or len({json.dumps(e, sort_keys=True) for e in receiver.events}) == 2
    )


def test_shuffling_delivers_events_out_of_order(wsapme_sandbox, receiver):
    wsapme_sandbox.config.update(
        {
            "p_error": 0,
            "p_delivered": 1,
            "p_read": 1,
            "p_receipts_off": 0,
            "p_reply": 0,
            "shuffle_window": 0.6,
        }
    )
    wsapme_sandbox.config.update({"ack_shapes": ["flat"]})
    ids = [send(wsapme_sandbox, to=f"+6012{n:07d}").json()["messageId"] for n in range(15)]
    wait_for(lambda: len(receiver.events) == 45)
    order = ["SERVER_ACK", "DELIVERY_ACK", "READ_ACK"]
    arrived = [[e["status"] for e in receiver.for_message(message_id)] for message_id in ids]
    assert any(statuses != order for statuses in arrived)
    assert all(sorted(statuses) == sorted(order) for statuses in arrived)


def test_an_early_ack_arrives_before_the_send_answer(wsapme_sandbox, receiver):
    wsapme_sandbox.config.update({"p_early_ack": 1.0, "server_ack_after": 5, "ack_shapes": ["flat"]})
    message_id = send(wsapme_sandbox).json()["messageId"]
    # No waiting: the ack was delivered while the send was still answering.
    assert [e["status"] for e in receiver.for_message(message_id)] == ["SERVER_ACK"]


def test_a_dead_webhook_endpoint_is_logged_not_fatal(wsapme_sandbox):
    port = free_port()
    wsapme_sandbox.config.update({"webhook_url": f"http://127.0.0.1:{port}/hook", "p_error": 1.0})
    send(wsapme_sandbox)
    entry = wait_for(lambda: wsapme_sandbox.deliveries and wsapme_sandbox.deliveries[0])
    assert entry["error"] == "ConnectionError"
    assert send(wsapme_sandbox).json()["success"] is True


# --- faults ---------------------------------------------------------------------------------


def queue_fault(sandbox, fault, count=1, endpoint="send"):
    answer = requests.post(
        f"{sandbox.url}/_sandbox/faults", json={"fault": fault, "count": count, "endpoint": endpoint}
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(("fault", "code"), [("rate_limited", 429), ("unavailable", 503)])
def test_throttling_answers_carry_retry_after_and_send_nothing(wsapme_sandbox, fault, code):
    wsapme_sandbox.config.update({"retry_after": 2})
    queue_fault(wsapme_sandbox, fault)
    answer = send(wsapme_sandbox)
    assert (answer.status_code, answer.headers["Retry-After"]) == (code, "2")
    assert wsapme_sandbox.messages == {}
    assert send(wsapme_sandbox).status_code == 200  # one-shot


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("invalid_number", "Invalid number"),
        ("unauthorized", "Unauthorized"),
        ("device_offline", "Device offline"),
    ],
)
def test_failure_answers_come_with_http_200(wsapme_sandbox, fault, reason):
    queue_fault(wsapme_sandbox, fault)
    answer = send(wsapme_sandbox)
    assert answer.status_code == 200
    assert answer.json()["success"] is False and reason in answer.json()["message"]
    assert wsapme_sandbox.messages == {}


def test_a_non_json_answer_still_sent_the_message(wsapme_sandbox):
    queue_fault(wsapme_sandbox, "not_json")
    answer = send(wsapme_sandbox)
    assert answer.status_code == 200
    with pytest.raises(ValueError):
        answer.json()
    assert len(wsapme_sandbox.messages) == 1


def test_accept_then_drop_processes_but_never_answers(wsapme_sandbox):
    queue_fault(wsapme_sandbox, "drop_response")
    with pytest.raises(requests.ConnectionError):
        send(wsapme_sandbox)
    (call,) = wsapme_sandbox.calls
    assert call["outcome"] == "drop_response" and call["message_id"] in wsapme_sandbox.messages


def test_a_stall_outlasts_the_clients_timeout(wsapme_sandbox):
    wsapme_sandbox.config.update({"stall": 1.0})
    queue_fault(wsapme_sandbox, "stall")
    with pytest.raises(requests.ReadTimeout):
        send(wsapme_sandbox, timeout=(1, 0.2))
    assert len(wsapme_sandbox.messages) == 1


def test_down_refuses_connections_then_comes_back(wsapme_sandbox):
    requests.post(f"{wsapme_sandbox.url}/_sandbox/down", json={"seconds": 0.5})
    time.sleep(0.1)
    with pytest.raises(requests.ConnectionError) as excinfo:
        send(wsapme_sandbox)
    assert "refused" in str(excinfo.value).lower()
    wait_for(lambda: _answers(wsapme_sandbox))
    assert wsapme_sandbox.calls == [c for c in wsapme_sandbox.calls if c["outcome"] == "sent"]


def _answers(sandbox):
    try:
        return send(sandbox).status_code == 200
    except requests.ConnectionError:
        return False


def test_latency_delays_every_answer(wsapme_sandbox):
    wsapme_sandbox.config.update({"latency": 0.3})
    started = time.monotonic()
    send(wsapme_sandbox)
    assert time.monotonic() - started >= 0.3


def test_fault_rates_apply_by_probability(wsapme_sandbox):
    wsapme_sandbox.config.update({"fault_rates": {"device_offline": 1.0}})
    assert all(send(wsapme_sandbox).json()["success"] is False for _ in range(3))


def test_faults_can_target_status_checks(wsapme_sandbox):
    message_id = send(wsapme_sandbox).json()["messageId"]
    queue_fault(wsapme_sandbox, "rate_limited", endpoint="status")
    answer = requests.post(
        f"{wsapme_sandbox.url}/v1/getMessageStatus", json={"messageId": message_id}, headers=TOKEN
    )
    assert answer.status_code == 429


# --- the record and the control API ---------------------------------------------------------


def test_every_send_call_is_recorded_and_readable_over_http(wsapme_sandbox):
    first = send(wsapme_sandbox, to="0123456789").json()
    queue_fault(wsapme_sandbox, "rate_limited")
    send(wsapme_sandbox)
    send(wsapme_sandbox, to="+60198765432", message="Second")

    calls = requests.get(f"{wsapme_sandbox.url}/_sandbox/calls").json()["calls"]
    assert [(c["phone"], c["message"], c["outcome"]) for c in calls] == [
        ("0123456789", "Hello Aisyah", "sent"),
        ("60123456789", "Hello Aisyah", "rate_limited"),
        ("60198765432", "Second", "sent"),
    ]
    assert calls[0]["message_id"] == first["messageId"] and calls[0]["at"]

    requests.post(f"{wsapme_sandbox.url}/_sandbox/reset")
    assert requests.get(f"{wsapme_sandbox.url}/_sandbox/calls").json() == {"calls": []}


def test_knobs_change_over_http_and_unknown_ones_are_refused(wsapme_sandbox):
    url = f"{wsapme_sandbox.url}/_sandbox/config"
    assert requests.post(url, json={"latency": "0.05", "p_reply": 1}).json()["latency"] == 0.05
    assert wsapme_sandbox.config.p_reply == 1.0
    assert requests.post(url, json={"nonsense": 1}).status_code == 400
    assert requests.post(url, json={"fault_rates": {"explode": 1}}).status_code == 400
    assert (
        requests.post(f"{wsapme_sandbox.url}/_sandbox/faults", json={"fault": "explode"}).status_code == 400
    )


# --- the command and sandbox mode -------------------------------------------------------------


def test_the_command_serves_the_sandbox(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "wsapme_sandbox", "--port", str(port), "--set", "p_reply=1"],
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert f"WSAPME sandbox on http://127.0.0.1:{port}" in line and "No real WhatsApp message" in line
        config = requests.get(f"http://127.0.0.1:{port}/_sandbox/config").json()
        assert (config["p_reply"], config["token"]) == (1, settings.WSAPME_SANDBOX_TOKEN)
        assert config["webhook_headers"] == {"X-Webhook-Token": settings.WSAPME_WEBHOOK_SECRETS[0]}
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("knob", ["nonsense", "nonsense=1", 'fault_rates={"explode": 1}'])
def test_bad_knobs_are_a_command_error(knob):
    with pytest.raises(CommandError, match="--set"):
        call_command("wsapme_sandbox", "--port", "0", "--set", knob)


def test_a_busy_port_is_a_command_error(wsapme_sandbox):
    with pytest.raises(CommandError, match=f"Cannot listen on 127.0.0.1:{wsapme_sandbox.port}"):
        call_command("wsapme_sandbox", "--port", str(wsapme_sandbox.port))


def test_every_admin_page_says_when_no_real_message_is_sent(admin_client, settings):
    settings.WSAPME_SANDBOX = True
    assert "No real WhatsApp message is sent" in admin_client.get(reverse("admin:index")).content.decode()
    settings.WSAPME_SANDBOX = False
    assert "Sandbox mode" not in admin_client.get(reverse("admin:index")).content.decode()


def test_a_knob_keeps_its_declared_type_whatever_it_was_built_with():
    config = SandboxConfig(latency=0, seed=3)
    config.update({"latency": 0.05, "seed": "4"})
    assert (config.latency, config.seed) == (0.05, 4)
