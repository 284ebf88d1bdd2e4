"""Real-server tests: gunicorn started with blastsite/gunicorn.py on a free loopback port.

The server is a subprocess on the test database, so these tests commit (transactional_db).
Every loop is bounded in count and time, and all traffic goes to 127.0.0.1.
"""

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from .conftest import database_url, free_port
from .test_settings import ROOT

SECRET = "test-webhook-secret"  # pytest.ini


def get(port: int, path: str, timeout: float) -> int:
    """The status of GET `path`, on a new connection."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        client.request("GET", path)
        return client.getresponse().status
    finally:
        client.close()


@contextlib.contextmanager
def gunicorn(log_path, **env) -> Iterator[int]:
    """`gunicorn -c python:blastsite.gunicorn blastsite.wsgi` as the Procfile runs it; yields its port."""
    port = free_port()
    environ = {
        **{name: value for name, value in os.environ.items() if not name.startswith("GUNICORN_")},
        "DATABASE_URL": database_url(),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        **env,
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "python:blastsite.gunicorn", "blastsite.wsgi"]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):  # up to 30 s to start
            assert server.poll() is None, log_path.read_text()[-3000:]
            try:
                if get(port, "/healthz", timeout=2) == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"gunicorn did not answer /healthz: {log_path.read_text()[-3000:]}")
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def trickle(port: int, requests: list[tuple[bytes, bytes]], seconds: float, stop: threading.Event) -> None:
    """For each (head, tail): send the head at once, then the tail a byte every 0.25 s, for `seconds`."""
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in requests]
    try:
        for sock, (head, _) in zip(sockets, requests, strict=True):
            sock.sendall(head)
        for tick in range(int(seconds / 0.25)):
            if stop.is_set():
                break
            for sock, (_, tail) in zip(sockets, requests, strict=True):
                with contextlib.suppress(OSError):  # the server gave up on this client: allowed
                    sock.sendall(tail[tick : tick + 1])
            time.sleep(0.25)
    finally:
        for sock in sockets:
            sock.close()


def slow_requests(count: int) -> list[tuple[bytes, bytes]]:
    """Half trickle their headers; half send a webhook's headers at once, then trickle its body.
    Each is longer than 40 bytes, so none is complete when the trickle stops."""
    headers = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 60 + b"\r\n\r\n"
    body = b'{"messageId": "SLOW", "status": "READ", "padding": "' + b"x" * 60 + b'"}'
    webhook = (
        b"POST /api/webhook/wsapme HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"X-Webhook-Token: " + SECRET.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    return [(b"", headers) if i % 2 else (webhook, body) for i in range(count)]


@pytest.mark.django_db(transaction=True)
def test_twelve_slow_clients_do_not_stop_healthz_from_answering_within_a_second(tmp_path):
    # Two workers, whatever the machine's core count, so the test means the same everywhere.
    with gunicorn(tmp_path / "gunicorn.log", WEB_CONCURRENCY="2") as port:
        stop = threading.Event()
        slow = threading.Thread(target=trickle, args=(port, slow_requests(12), 10.0, stop))
        slow.start()
        waits = []
        try:
            time.sleep(1.0)  # every slow client connected and sending
            for _ in range(12):  # about 8 s of checks while they trickle
                start = time.monotonic()
                try:
                    status = get(port, "/healthz", timeout=1.0)
                except OSError:  # timed out
                    status = None
                waits.append((status, round(time.monotonic() - start, 2)))
                time.sleep(0.5)
        finally:
            stop.set()
            slow.join(timeout=15)
    assert all(status == 200 and wait < 1.0 for status, wait in waits), waits
