"""A local stand-in for the WSAPME gateway, for the demo, end-to-end tests and benchmarks.

It speaks the shapes in docs/wsapme.md, moves each message through its statuses on a
seeded timeline, posts webhooks (acks and replies) to a configured URL, and has knobs for the
gateway's bad days. Nothing here reaches a real phone. No ORM: it is a plain HTTP server.

A ban or a silent drop: `drop_rate` (0..1) is the share of messages that reach SERVER_ACK and
never anything more, drawn per message from the seed apart from the rest of its timeline (so the
other messages keep theirs); `p_error` is the share refused with ERROR. Both apply to messages
sent after they are set, so POST /_sandbox/config {"drop_rate": 1} mid-blast is a ban starting.

Tracked links: a message's URLs with /l/ in them are fetched as WhatsApp's link preview
(`p_link_preview`, right after the send is taken) and clicked by readers (`p_click`, `click_after`;
`p_click_if` and `p_reply_if` give a message containing some words its own chances), each GET at
its time on the message's timeline, drawn apart from the rest of it (the other draws keep theirs).

Control API (loopback only, no token): GET /_sandbox/calls, /_sandbox/webhooks, /_sandbox/clicks,
/_sandbox/config; POST /_sandbox/config (JSON knobs), /_sandbox/faults, /_sandbox/down,
/_sandbox/reset.
"""

import dataclasses
import itertools
import json
import logging
import random
import socket
import sys
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .sandbox_events import Deliveries
from .sandbox_messages import (
    FAILURE_MESSAGES,
    FAULTS,
    NOT_SENT_FAULTS,
    OPT_OUTS,
    PHONE,
    REPLIES,
    Fetch,
    Message,
    SandboxConfig,
    tracked_links,
)

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: many senders and pollers connect at once
    timeout = 0.05

    def handle_error(self, request, client_address):
        # A client that timed out on a stalled answer, or dropped it, is the point of those knobs.
        if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "WSAPME-sandbox"
    # Headers and body go out in two writes; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK, adding ~40 ms to every call on loopback. A real gateway does not.
    disable_nagle_algorithm = True

    def do_GET(self):
        self.server.sandbox.handle(self)

    def do_POST(self):
        self.server.sandbox.handle(self)

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        return json.loads(body or b"{}")

    def answer(self, status: int, body, headers: dict | None = None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/html")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class Sandbox(Deliveries):
    """The gateway: `start()` serves in a background thread, `stop()` ends it."""

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.config = config or SandboxConfig()
        self.lock = threading.Lock()
        self.httpd = _Server((host, port), _Handler)
        self.httpd.sandbox = self
        self.host, self.port = self.httpd.server_address[:2]
        self._stopping = threading.Event()
        self._down_until = 0.0
        self._down = threading.Event()  # set while nothing listens
        self._threads: list[threading.Thread] = []
        self._events: list = []  # heap of (due monotonic, seq, webhook payload or Fetch, message id)
        self._events_ready = threading.Condition(self.lock)
        self._seq = itertools.count()
        self._local = threading.local()  # one HTTP session per thread
        self.reset()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> "Sandbox":
        for target in (self._serve, self._deliver_events):
            thread = threading.Thread(target=target, daemon=True, name=f"sandbox-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._events_ready:
            self._events_ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self.httpd.server_close()

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._stopping.wait(0.5):
                pass
        finally:
            self.stop()

    def reset(self) -> None:
        with self.lock:
            self.calls: list[dict] = []
            self.deliveries: list[dict] = []
            self.fetches: list[dict] = []  # of tracked links: clicks and previews
            self.messages: dict[str, Message] = {}
            self._sends_per_phone: dict[str, int] = {}
            self._faults: deque = deque()  # (fault, endpoint)
            self._events.clear()
            self._fault_rng = random.Random(self.config.seed)

    def down(self, seconds: float) -> None:
        """Refuse connections (nothing listens) for `seconds`; returns once the listener is closed."""
        self._down.clear()
        self._down_until = time.monotonic() + seconds
        if threading.current_thread() not in self._threads:
            self._down.wait(timeout=2)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            if time.monotonic() < self._down_until:
                if self.httpd.socket.fileno() != -1:
                    self.httpd.socket.close()
                self._down.set()
                time.sleep(0.01)
                continue
            if self.httpd.socket.fileno() == -1:  # back up after being down
                self.httpd.socket = socket.socket(self.httpd.address_family, self.httpd.socket_type)
                self.httpd.server_bind()
                self.httpd.server_activate()
            self.httpd.handle_request()

    # --- HTTP ------------------------------------------------------------------------------

    def handle(self, request: _Handler) -> None:
        path = request.path.split("?")[0].rstrip("/")
        try:
            body = request.read_json() if request.command == "POST" else {}
        except (ValueError, UnicodeDecodeError):
            return request.answer(400, {"success": False, "message": "Invalid JSON body"})
        if not isinstance(body, dict):
            return request.answer(400, {"success": False, "message": "Invalid JSON body"})
        routes = {
            ("POST", "/v1/sendMessage2"): self._send,
            ("POST", "/v1/sendMessage"): self._send,
            ("POST", "/v1/getMessageStatus"): self._status,
            ("GET", "/_sandbox/calls"): lambda r, b: r.answer(200, {"calls": self._copy(self.calls)}),
            ("GET", "/_sandbox/webhooks"): lambda r, b: r.answer(
                200, {"webhooks": self._copy(self.deliveries)}
            ),
            ("GET", "/_sandbox/clicks"): lambda r, b: r.answer(200, {"clicks": self._copy(self.fetches)}),
            ("GET", "/_sandbox/config"): lambda r, b: r.answer(200, dataclasses.asdict(self.config)),
            ("POST", "/_sandbox/config"): self._configure,
            ("POST", "/_sandbox/faults"): self._queue_faults,
            ("POST", "/_sandbox/down"): self._go_down,
            ("POST", "/_sandbox/reset"): lambda r, b: (self.reset(), r.answer(200, {"reset": True})),
        }
        route = routes.get((request.command, path))
        if route is None:
            return request.answer(404, {"success": False, "message": f"No route {request.command} {path}"})
        route(request, body)

    def _copy(self, items: list) -> list:
        with self.lock:
            return list(items)

    def _configure(self, request, body):
        try:
            with self.lock:
                self.config.update(body)
        except (ValueError, TypeError) as exc:
            return request.answer(400, {"error": str(exc)})
        request.answer(200, dataclasses.asdict(self.config))

    def _queue_faults(self, request, body):
        fault, count, endpoint = body.get("fault"), body.get("count", 1), body.get("endpoint", "send")
        if fault not in FAULTS or endpoint not in {"send", "status"} or not isinstance(count, int):
            return request.answer(
                400, {"error": f"fault must be one of {sorted(FAULTS)}, endpoint send or status"}
            )
        with self.lock:
            self._faults.extend([(fault, endpoint)] * count)
        request.answer(200, {"queued": count})

    def _go_down(self, request, body):
        seconds = float(body.get("seconds", 1))
        self._down.clear()
        self._down_until = time.monotonic() + seconds  # the listener closes within a tick
        request.answer(200, {"down_for": seconds})

    def _next_fault(self, endpoint: str) -> str | None:
        with self.lock:
            for i, (fault, wanted) in enumerate(self._faults):
                if wanted == endpoint:
                    del self._faults[i]
                    return fault
            if endpoint == "send":
                for fault, rate in self.config.fault_rates.items():
                    if self._fault_rng.random() < rate:
                        return fault
        return None

    def _not_sent(self, request, fault: str):
        if fault in ("rate_limited", "unavailable"):
            code, text = (
                (429, "Too many requests") if fault == "rate_limited" else (503, "Service unavailable")
            )
            retry = {"Retry-After": f"{self.config.retry_after:g}"}
            return request.answer(code, {"success": False, "message": text}, retry)
        request.answer(200, {"success": False, "message": FAILURE_MESSAGES[fault]})

    # --- the gateway -----------------------------------------------------------------------

    def _send(self, request, body):
        time.sleep(self.config.latency)
        endpoint = request.path.rstrip("/").rsplit("/", 1)[-1]
        to, device, text = str(body.get("to", "")), str(body.get("device", "")), body.get("message")
        match = PHONE.match(to.replace(" ", ""))
        call = {
            "endpoint": endpoint,
            "device": device,
            "to": to,
            "phone": match.group(1) if match else to,
            "message": text,
            "at": datetime.now(UTC).isoformat(),
            "message_id": None,
        }
        fault = self._next_fault("send")
        if request.headers.get("x-wsapme-token") != self.config.token:
            fault = "unauthorized"
        elif not match or not device or not isinstance(text, str) or not text:
            fault = fault if fault in ("rate_limited", "unavailable") else "invalid_number"
        call["outcome"] = fault or "sent"
        if fault in NOT_SENT_FAULTS:
            self._record(call)
            return self._not_sent(request, fault)

        message = self._accept(device, call["phone"], text)
        call["message_id"] = message.id
        self._record(call)
        self._schedule(message, early_ack=self._rng(message, "early").random() < self.config.p_early_ack)
        if fault == "drop_response":
            request.close_connection = True  # processed, but the answer never comes
            return None
        if fault == "stall":
            time.sleep(self.config.stall)
        if fault == "not_json":
            return request.answer(200, b"<html><body>502 Bad Gateway</body></html>")
        request.answer(200, message.send_answer(endpoint))

    def _record(self, call: dict) -> None:
        with self.lock:
            self.calls.append(call)

    def _rng(self, message: Message, purpose: str) -> random.Random:
        return random.Random(f"{self.config.seed}:{message.phone}:{message.nth}:{purpose}")

    def _accept(self, device: str, phone: str, text: str) -> Message:
        with self.lock:
            nth = self._sends_per_phone.get(phone, 0)
            self._sends_per_phone[phone] = nth + 1
            config = self.config
        # The timeline depends on the seed, the number and how often it was sent to: not on
        # which sender got there first, so runs are reproducible.
        rng = random.Random(f"{config.seed}:{phone}:{nth}")
        timeline, reply, clicks, at = [], None, [], 0.0

        def later(mean):
            nonlocal at
            at += rng.uniform(0.5, 1.5) * mean
            return at

        if rng.random() < config.p_error:
            timeline.append((later(config.server_ack_after), "ERROR"))
        else:
            timeline.append((later(config.server_ack_after), "SERVER_ACK"))
            if rng.random() < config.p_delivered:
                timeline.append((later(config.delivered_after), "DELIVERY_ACK"))
                if rng.random() < config.p_read:
                    read_at = later(config.read_after)
                    if rng.random() >= config.p_receipts_off:
                        timeline.append((read_at, "READ_ACK"))
                    if rng.random() < config.chance("p_reply", text):
                        words = OPT_OUTS if rng.random() < config.p_opt_out else REPLIES
                        reply = (later(config.reply_after), rng.choice(words))
                    clicks = self._clicks(config, f"{config.seed}:{phone}:{nth}", text, read_at)
        if random.Random(f"{config.seed}:{phone}:{nth}:drop").random() < config.drop_rate:
            timeline, reply, clicks = [(timeline[0][0], "SERVER_ACK")], None, []
        previews = []
        if random.Random(f"{config.seed}:{phone}:{nth}:preview").random() < config.p_link_preview:
            previews = [(0.0, Fetch(url, "preview")) for url in tracked_links(text)]
        message = Message(
            id="3EB0" + uuid.uuid4().hex[:18].upper(),
            device=device,
            phone=phone,
            text=text,
            sent_wall=time.time(),
            sent_mono=time.monotonic(),
            nth=nth,
            timeline=timeline,
            reply=reply,
            fetches=previews + clicks,
        )
        with self.lock:
            self.messages[message.id] = message
        return message

    def _status(self, request, body):
        time.sleep(self.config.latency)
        fault = self._next_fault("status")
        if request.headers.get("x-wsapme-token") != self.config.token:
            fault = "unauthorized"
        if fault in NOT_SENT_FAULTS:
            return self._not_sent(request, fault)
        with self.lock:
            message = self.messages.get(str(body.get("messageId", "")))
            unknown = self._fault_rng.random() < self.config.p_status_unknown
        if fault == "not_json":
            return request.answer(200, b"<html><body>502 Bad Gateway</body></html>")
        if message is None or unknown:
            return request.answer(200, {"success": False, "data": {}})
        status, wall = message.status_at(time.monotonic())
        found = {"status": status, "messageC2STimestamp": int(wall)}
        # The shape is not documented: the status has been seen at the top and under data.
        if self._rng(message, "status-shape").random() < 0.5:
            answer = {"success": True, "data": {"id": message.id, **found}}
        else:
            answer = {"success": True, "id": message.id, **found}
        request.answer(200, answer)
