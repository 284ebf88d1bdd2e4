"""3. Webhook ingestion: gunicorn with production settings on loopback, a load generator posting
status events for messages we sent.

Sustained events per second, p50 and p99 latency, and events stored equal to events sent (every
authenticated event is stored raw before the answer), compared with pgbench's simple-update
transactions per second on the same database in the same run: the database's own ceiling here.
"""

import asyncio
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench import common

FULL = {
    "messages": 20000,
    "warmup": 3.0,
    "seconds": 20.0,
    "connections": 16,
    "pgbench_scale": 10,
    "pgbench_seconds": 15,
}
SMOKE = {
    "messages": 200,
    "warmup": 0.5,
    "seconds": 2.0,
    "connections": 4,
    "pgbench_scale": 1,
    "pgbench_seconds": 2,
}
TARGET_RATE, TARGET_P99 = 1000.0, 0.100
STATUSES = ("SERVER_ACK", "DELIVERY_ACK", "READ_ACK")
NUMBERS = {"SERVER_ACK": 2, "DELIVERY_ACK": 3, "READ_ACK": 4}


def message_id(n: int) -> str:
    """The id the seeded recipient number n (from 1) was sent under; the same formula as seed()."""
    return "3EB0" + hashlib.md5(str(n).encode()).hexdigest()[:18].upper()


def seed(messages: int):
    """One sent blast: `messages` recipients PENDING under known message ids."""
    ids = "'3EB0' || upper(substr(md5(g::text), 1, 18))"  # as message_id()
    return common.sent_blast("Webhooks", "generate_series(1, %s) AS g", (messages,), message_id=ids)


def event(i: int, messages: int) -> dict:
    """The i-th event: every message gets SERVER_ACK, then every one DELIVERY_ACK, then READ_ACK,
    in the four shapes WSAPME-like gateways post."""
    n, status = i % messages + 1, STATUSES[(i // messages) % len(STATUSES)]
    phone, now = f"6012{n:07d}", int(time.time())
    shape = i % 4
    if shape < 2:
        return {
            "key": {"remoteJid": f"{phone}@s.whatsapp.net", "fromMe": True, "id": message_id(n)},
            "status": status if shape == 0 else NUMBERS[status],
            "messageTimestamp": str(now - 60),
            "messageC2STimestamp": str(now),
        }
    if shape == 2:
        return {"messageId": message_id(n), "status": status, "timestamp": now}
    return {"id": message_id(n), "ack": NUMBERS[status], "timestamp": now}


class LoadGenerator:
    """Closed loop: `connections` clients, each posting one event and waiting for the answer, again
    and again. A new connection each time: gunicorn closes it after every answer (no keep-alive)."""

    def __init__(self, port: int, secret: str, messages: int, path: str = "/api/webhook/wsapme"):
        self.port, self.secret, self.messages, self.path = port, secret, messages, path
        self.next_event = 0
        self.results: list[tuple[float, float, int]] = []  # (start, end, HTTP status; 0: no answer)

    def request(self, body: bytes) -> bytes:
        head = (
            f"POST {self.path}?token={self.secret} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
        )
        return head.encode() + body

    async def post_one(self) -> None:
        i, self.next_event = self.next_event, self.next_event + 1
        data = self.request(json.dumps(event(i, self.messages)).encode())
        start = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(data)
            answer = await reader.read()
            writer.close()
            status = int(answer[9:12]) if answer.startswith(b"HTTP/1.") else 0
        except (OSError, ValueError):
            status = 0
        self.results.append((start, time.perf_counter(), status))

    async def client(self, until: float) -> None:
        while time.perf_counter() < until:
            await self.post_one()

    def run(self, connections: int, seconds: float) -> None:
        until = time.perf_counter() + seconds

        async def main():
            await asyncio.gather(*(self.client(until) for _ in range(connections)))

        asyncio.run(main())


class Gunicorn:
    """The site as production serves it (`gunicorn -c python:blastsite.gunicorn blastsite.wsgi`, the
    Procfile's web process, WEB_CONCURRENCY at its default) on a loopback port, with the floors'
    two views added (bench/floor.py). Its access log goes to this script's log, not to the table."""

    def __init__(self):
        self.port = common.free_port()
        command = ["gunicorn", "-c", "python:blastsite.gunicorn", "blastsite.wsgi"]
        env = os.environ | {
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "DJANGO_SETTINGS_MODULE": "bench.floor_settings",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *command], cwd=common.ROOT, env=env, stdout=sys.stderr
        )
        common.wait_until_up(
            f"http://127.0.0.1:{self.port}/healthz",
            lambda: self.proc.poll() is None,
            headers={"X-Forwarded-Proto": "https"},  # as from the TLS proxy: no redirect to https
        )

    def pids(self) -> list[int]:
        """The master and its workers now (workers are recycled after max_requests)."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return []
        return [self.proc.pid, *map(int, children)]

    def workers(self) -> int:
        return len(self.pids()) - 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def pgbench_tps(clients: int, seconds: int, scale: int) -> float:
    """pgbench's simple-update transaction (-N) per second on the bench database, `clients` at once."""
    from django.db import connection

    pgbench = shutil.which("pgbench") or next(
        iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))), None
    )
    common.check(pgbench is not None, "pgbench is not installed (Debian: apt-get install postgresql-client)")
    url = urlsplit(os.environ["DATABASE_URL"])
    where = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    env = os.environ | ({"PGPASSWORD": url.password} if url.password else {})
    name = connection.settings_dict["NAME"]

    def pgbench_run(*args: str) -> str:
        done = subprocess.run([pgbench, *where, *args, name], env=env, capture_output=True, text=True)
        common.check(done.returncode == 0, f"pgbench {' '.join(args)} failed: {done.stderr[-500:]}")
        return done.stdout

    pgbench_run("-i", "-q", "-s", str(scale))
    try:
        output = pgbench_run(
            "-N", "-n", "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1)), "-T", str(seconds)
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers")
    found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
    common.check(found is not None, f"no tps in pgbench's output: {output[-500:]}")
    return float(found.group(1))


INSERT = "a view that does one INSERT"
FLOORS = {
    "a bare Django view (every middleware)": "/bench/floor/bare",
    INSERT: "/bench/floor/insert",
}


def floor_rate(server: "Gunicorn", path: str, size: dict) -> tuple[float, float, int]:
    """Requests a second the same load gets from one of the floors' views: (rate, p99 s, requests)."""
    load = LoadGenerator(server.port, "", size["messages"], path)
    load.run(size["connections"], size["warmup"])
    warm = len(load.results)
    start = time.perf_counter()
    load.run(size["connections"], size["seconds"])
    wall = time.perf_counter() - start
    statuses = {status for _, _, status in load.results}
    common.check(statuses == {200}, f"{path} answered {sorted(statuses)}")
    latencies = [end - begin for begin, end, _ in load.results[warm:]]
    return len(latencies) / wall, percentile(latencies, 0.99), len(latencies)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def bench(smoke: bool) -> list[common.Row]:
    from django.conf import settings

    from blasts.models import StatusHistory, WebhookEvent

    size = SMOKE if smoke else FULL
    seed(size["messages"])
    load = LoadGenerator(0, settings.WSAPME_WEBHOOK_SECRETS[0], size["messages"])
    with Gunicorn() as server:
        load.port = server.port
        common.say(
            f"gunicorn, {server.workers()} workers; {size['connections']} connections, warm-up {size['warmup']:g} s"
        )
        load.run(size["connections"], size["warmup"])
        warm = len(load.results)
        load.run(1, size["warmup"])  # one at a time: the answer time with no queue
        alone = [end - start for start, end, _ in load.results[warm:]]
        warm = len(load.results)
        common.say(f"posting status events for {size['seconds']:g} s")
        workers = server.workers()
        meter = common.CpuMeter({"gunicorn": server.pids, "load generator": lambda: [os.getpid()]}).start()
        start = time.perf_counter()
        load.run(size["connections"], size["seconds"])
        wall = time.perf_counter() - start
        meter.stop()
        floors = {name: floor_rate(server, path, size) for name, path in FLOORS.items()}
    common.say(f"pgbench -N, {workers} clients (one per worker), {size['pgbench_seconds']} s")
    tps = pgbench_tps(workers, size["pgbench_seconds"], size["pgbench_scale"])

    measured = load.results[warm:]
    answered = [status for _, _, status in load.results]
    stored = WebhookEvent.objects.exclude(
        kind=WebhookEvent.Kind.UNKNOWN
    ).count()  # the floor stores "unknown"
    applied = WebhookEvent.objects.filter(state=WebhookEvent.State.APPLIED).count()
    history = StatusHistory.objects.filter(source=StatusHistory.Source.WEBHOOK).count()
    sent, ok = len(answered), answered.count(200)
    common.check(ok == sent, f"{sent - ok} of {sent} events were not answered 200: {sorted(set(answered))}")
    common.check(stored == sent, f"{sent} events sent, {stored} stored: {sent - stored} lost")
    common.check(history == applied, f"{applied} events applied, but {history} history rows")

    rate = len(measured) / wall
    latencies = [end - start for start, end, _ in measured]
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    cpu = f"CPU ms an event: {meter.per(len(measured))}."
    return [
        common.Row(
            f"3. Webhook ingestion, {size['connections']} connections",
            f"{rate:.0f} events/s",
            f"pgbench -N {tps:.0f} tps",
            f"{rate / tps:.3f}x",
            f"≥ {TARGET_RATE:.0f} events/s",
            rate >= TARGET_RATE,
            f"{len(measured)} events in {wall:.1f} s after a {size['warmup']:g} s warm-up; gunicorn with "
            f"blastsite/gunicorn.py ({workers} gthread workers), DEBUG off, a new connection per event. {cpu} "
            f"{rate / floors[INSERT][0]:.2f}x the one-INSERT floor below.",
        ),
        *(
            common.Row(
                f"3. Floor: {name}",
                f"{floor:.0f} requests/s",
                f"pgbench -N {tps:.0f} tps",
                f"{floor / tps:.3f}x",
                "—",
                None,
                f"The same load ({size['connections']} connections, {size['seconds']:g} s, a new connection "
                f"each) on {FLOORS[name]} (bench/floor.py, served by the bench only): {count} requests, "
                f"p99 {p99 * 1000:.1f} ms. The webhook is {rate / floor:.2f}x this.",
            )
            for name, (floor, p99, count) in floors.items()
        ),
        common.Row(
            "3. Webhook latency p50 / p99",
            f"{p50 * 1000:.1f} / {p99 * 1000:.1f} ms",
            f"one at a time: p50 {statistics.median(alone) * 1000:.1f} ms",
            f"p99 {p99 / TARGET_P99:.2f}x target",
            f"p99 < {TARGET_P99 * 1000:.0f} ms",
            p99 < TARGET_P99,
            f"Answer time seen by the load generator (connect, send, full answer) with {size['connections']} "
            f"in flight, max {max(latencies) * 1000:.1f} ms; {size['connections']} in flight ÷ rate = "
            f"{size['connections'] / rate * 1000:.1f} ms is the mean a closed loop must see. One at a time "
            f"({len(alone)} events): p99 {percentile(alone, 0.99) * 1000:.1f} ms.",
        ),
        common.Row(
            "3. Webhook events lost",
            f"{sent - stored} of {sent}",
            f"{stored} stored",
            f"{stored / sent:.4f} stored/sent",
            "0 lost",
            stored == sent,
            f"Every event answered 200; {applied} advanced a recipient (one history row each), "
            f"{stored - applied} changed nothing (a later status was there already).",
        ),
    ]


if __name__ == "__main__":
    common.main(__doc__, bench)
