"""3. Webhook events: ingestion, the applier, and end to end.

Gunicorn with production settings on loopback; a load generator posts status events for messages we
sent. The webhook only stores events raw and answers; `manage.py apply_events` applies them. In one run:

1. Ingestion, no applier running (the backlog builds): sustained events per second under a closed
   loop of 16 connections, p50 / p99, events stored equal to events sent; against the floors measured
   with the same load in the same run (bench/floor.py: a bare Django view, a view that does one INSERT).
2. The applier: `manage.py apply_events --batch 500` (drains and exits) on the stored backlog, events
   per second of its wall time; then two of them at once on a fresh backlog of the same shape. Every
   event must end applied or no change, and every recipient at the last status posted for it.
3. End to end: `apply_events --loop` running (woken by NOTIFY), events posted at a paced 500 a second
   (open loop); for each, the time from the webhook's answer to the first time a reader polling the
   recipients (every 20 ms, its own connection) sees the new status.
4. pgbench's simple-update transactions per second on the same database: its own ceiling here.
"""

import asyncio
import collections
import hashlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench import common

FULL = {
    "messages": 20000,
    "warmup": 3.0,
    "seconds": 20.0,
    "connections": 16,
    "e2e_seconds": 20.0,
    "pgbench_scale": 10,
    "pgbench_seconds": 15,
}
SMOKE = {
    "messages": 200,
    "warmup": 0.5,
    "seconds": 2.0,
    "connections": 4,
    "e2e_seconds": 2.0,
    "pgbench_scale": 1,
    "pgbench_seconds": 2,
}
TARGET_FLOOR_RATIO, TARGET_P99 = 0.8, 0.050  # ingestion: ≥ 0.8x the one-INSERT floor, p99 < 50 ms
TARGET_APPLIER = 3000.0  # events a second
E2E_RATE, TARGET_E2E_P99 = 500.0, 1.0  # end to end: p99 < 1 s at a sustained 500 events a second
APPLIER_BATCH = 500
POLL_EVERY = 0.020  # the end-to-end reader's look at the recipients
ANSWER_TIMEOUT = 10.0  # seconds the end-to-end generator waits for an answer
STATUSES = ("SERVER_ACK", "DELIVERY_ACK", "READ_ACK")
NUMBERS = {"SERVER_ACK": 2, "DELIVERY_ACK": 3, "READ_ACK": 4}


def message_id(n: int) -> str:
    """The id the seeded recipient number n (from 1) was sent under; the same formula as seed()."""
    return "3EB0" + hashlib.md5(str(n).encode()).hexdigest()[:18].upper()


def seed(messages: int, first: int = 1):
    """One sent blast: `messages` recipients PENDING, numbered from `first`, under known message ids."""
    ids = "'3EB0' || upper(substr(md5(g::text), 1, 18))"  # as message_id()
    return common.sent_blast(
        "Webhooks", "generate_series(%s, %s) AS g", (first, first + messages - 1), message_id=ids
    )


def event(i: int, messages: int, first: int = 1) -> dict:
    """The i-th event: every message gets SERVER_ACK, then every one DELIVERY_ACK, then READ_ACK,
    in the four shapes WSAPME-like gateways post."""
    n, status = first + i % messages, STATUSES[(i // messages) % len(STATUSES)]
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


def expected_statuses(events: int, messages: int) -> collections.Counter:
    """How many recipients end at each status once the first `events` events are applied: each at the
    last (highest) status posted for it, PENDING if none was."""
    from blasts.models import BlastRecipient

    Status = BlastRecipient.Status
    ladder = [Status.PENDING, Status.SERVER_ACK, Status.DELIVERY_ACK, Status.READ_ACK]
    rounds, extra = divmod(events, messages)
    found = collections.Counter()
    found[int(ladder[min(rounds + 1, 3)])] += extra
    found[int(ladder[min(rounds, 3)])] += messages - extra
    return +found


def statuses_of(blast) -> collections.Counter:
    from django.db.models import Count

    rows = blast.recipients.values_list("status").annotate(n=Count("id")).order_by()
    return collections.Counter({status: n for status, n in rows})


def event_states(ids: tuple[int, int]) -> collections.Counter:
    """How many of the webhook events with an id in `ids` (first, last) are in each state."""
    from django.db.models import Count

    from blasts.models import WebhookEvent

    found = WebhookEvent.objects.filter(pk__gte=ids[0], pk__lte=ids[1]).values_list("state")
    return collections.Counter(dict(found.annotate(n=Count("id")).order_by()))


def all_applied(states: collections.Counter) -> bool:
    from blasts.models import WebhookEvent

    return states[WebhookEvent.State.APPLIED] + states[WebhookEvent.State.NO_CHANGE] == sum(states.values())


def check_applied(blast, events: int, messages: int, ids: tuple[int, int], what: str) -> collections.Counter:
    """Every event with an id in `ids` (first, last) applied or no change, and the blast's recipients
    each at the last status posted for it; the events' states."""
    states = event_states(ids)
    stored = sum(states.values())
    common.check(stored == events, f"{what}: {events} events posted, {stored} stored")
    common.check(all_applied(states), f"{what}: not every event applied or no change: {dict(states)}")
    found, wanted = statuses_of(blast), expected_statuses(events, messages)
    common.check(found == wanted, f"{what}: recipients' statuses {dict(found)}, expected {dict(wanted)}")
    return states


def event_ids() -> int:
    """The last webhook event's id so far (0 if none)."""
    from django.db.models import Max

    from blasts.models import WebhookEvent

    return WebhookEvent.objects.aggregate(last=Max("id"))["last"] or 0


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
            status = common.http_status(await common.http_exchange(self.port, data))
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
        return common.with_children(self.proc.pid)

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


def applier_command(*extra: str) -> list[str]:
    return [sys.executable, "manage.py", "apply_events", "--batch", str(APPLIER_BATCH), *extra]


def appliers_run(processes: int) -> tuple[float, common.CpuMeter]:
    """`processes` times `manage.py apply_events --batch 500` at once, each draining the queue and exiting:
    the seconds from their start to the last one's end, and the CPU they and the database used."""
    procs: list[subprocess.Popen] = []
    meter = common.CpuMeter({"appliers": lambda: [p.pid for p in procs if p.poll() is None]}).start()
    start = time.perf_counter()
    procs += [
        subprocess.Popen(applier_command(), cwd=common.ROOT, stdout=sys.stderr, stderr=sys.stderr)
        for _ in range(processes)
    ]
    codes = [proc.wait() for proc in procs]
    wall = time.perf_counter() - start
    meter.stop()
    common.check(codes == [0] * processes, f"apply_events exited {codes}")
    return wall, meter


def backlog_store(events: int, messages: int, first: int) -> tuple[int, int]:
    """`events` events stored unapplied as the webhook stores them (webhook_events_store, 100 a call,
    as the largest body the webhook takes), without HTTP: (first id, last id)."""
    from blasts.tracking.events import webhook_events_store

    before = event_ids()
    for start in range(0, events, 100):
        webhook_events_store([event(i, messages, first) for i in range(start, min(start + 100, events))])
    return before + 1, event_ids()


class FunnelReader(threading.Thread):
    """A reader of its own connection: every POLL_EVERY seconds, the status of the recipients whose
    events were answered and not yet seen; the first time each shows the event's status or a later
    one (as the funnel counts: status >= it), the time since the webhook's answer."""

    def __init__(self):
        super().__init__(daemon=True)
        self.answered: collections.deque = collections.deque()  # (answer time, message id, status)
        self.pending: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
        self.latencies: list[float] = []
        self.polls, self.stop = 0, threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
                while not self.stop.is_set():
                    tick = time.perf_counter()
                    while self.answered:
                        answered, mid, status = self.answered.popleft()
                        self.pending[mid].append((answered, status))
                    if self.pending:
                        rows = conn.execute(
                            "SELECT message_id, status FROM blasts_blastrecipient WHERE message_id = ANY(%s)",
                            [list(self.pending)],
                        ).fetchall()
                        seen = time.perf_counter()  # when the reader has the answer
                        self.polls += 1
                        for mid, status in rows:
                            waiting = self.pending[mid]
                            self.latencies += [seen - at for at, wanted in waiting if status >= wanted]
                            waiting[:] = [(at, wanted) for at, wanted in waiting if status < wanted]
                            if not waiting:
                                del self.pending[mid]
                    self.stop.wait(max(0.0, tick + POLL_EVERY - time.perf_counter()))
        except BaseException as exc:  # reported by the caller
            self.failure = exc

    def unseen(self) -> int:
        return len(self.answered) + sum(len(waiting) for waiting in self.pending.values())


def paced(
    port: int, secret: str, rate: float, seconds: float, messages: int, first: int, reader: FunnelReader
):
    """Open loop: event k posted at start + k / rate whatever the answers (a new connection each);
    each answered event handed to `reader`. [(planned, sent, answered, HTTP status)] by k."""
    from blasts.models import BlastRecipient

    load = LoadGenerator(port, secret, messages)
    count = int(rate * seconds)
    results: list[tuple[float, float, float, int] | None] = [None] * count
    errors = collections.Counter()  # why a post had no answer

    async def post(k: int, planned: float) -> None:
        body = event(k, messages, first)
        data = load.request(json.dumps(body).encode())
        sent = time.perf_counter()

        try:  # a server behind the pace queues connections: one not answered in time counts as lost
            answer = await asyncio.wait_for(common.http_exchange(port, data), ANSWER_TIMEOUT)
            status = common.http_status(answer)
        except TimeoutError:
            status = 0
            errors[f"no answer within {ANSWER_TIMEOUT:g} s"] += 1
        except (OSError, ValueError) as exc:
            status = 0
            errors[str(exc)[:80] or type(exc).__name__] += 1
        answered = time.perf_counter()
        results[k] = (planned, sent, answered, status)
        if status == 200:
            mid, name = message_id(first + k % messages), STATUSES[(k // messages) % len(STATUSES)]
            reader.answered.append((answered, mid, int(BlastRecipient.Status[name])))

    async def main():
        tasks, start = [], time.perf_counter()
        for k in range(count):
            planned = start + k / rate
            if (delay := planned - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(k, planned)))
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return results, errors


class Applier:
    """`manage.py apply_events --loop --batch 500`, the applier as deployed, until stopped (SIGTERM)."""

    def __init__(self):
        from django.db import connection

        self.proc = subprocess.Popen(
            applier_command("--loop"), cwd=common.ROOT, stdout=sys.stderr, stderr=sys.stderr
        )
        deadline = time.monotonic() + 60
        while True:  # listening: its LISTEN session's last statement
            common.check(self.proc.poll() is None, f"apply_events --loop exited {self.proc.returncode}")
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
                    ["LISTEN blasts_webhook_events"],
                )
                if cursor.fetchone()[0]:
                    break
            common.check(time.monotonic() < deadline, "apply_events --loop did not LISTEN within 60 s")
            time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise SystemExit("FAILED: apply_events --loop did not stop within 30 s of SIGTERM") from None
        if exc == (None, None, None):
            common.check(code == 0, f"apply_events --loop exited {code}")


def end_to_end(server: "Gunicorn", secret: str, seconds: float, first: int) -> dict:
    """Events at a paced E2E_RATE with the applier running; their latency until a reader sees them."""
    from blasts.models import WebhookEvent

    count = int(E2E_RATE * seconds)
    messages = math.ceil(count / len(STATUSES))  # each recipient: SERVER_ACK, DELIVERY_ACK, READ_ACK
    blast = seed(messages, first)
    ids_before = event_ids()
    with Applier():
        reader = FunnelReader()
        reader.start()
        results, errors = paced(server.port, secret, E2E_RATE, seconds, messages, first, reader)
        posted = time.perf_counter()
        while reader.unseen() and time.perf_counter() - posted < 30 and reader.is_alive():
            time.sleep(0.05)
        reader.stop.set()
        reader.join()
        # Connections the generator gave up on may still be queued in gunicorn, and stored when a
        # worker reaches them: keep the applier until nothing new is stored and nothing waits.
        drained = time.perf_counter() + 60
        while time.perf_counter() < drained:
            last = event_ids()
            time.sleep(1.0)
            if event_ids() == last and not event_states((ids_before + 1, last))[WebhookEvent.State.RECEIVED]:
                break
    if reader.failure is not None:
        raise reader.failure
    answered = [status for *_, status in results].count(200)
    common.check(answered > 0, f"end to end: none of {count} events answered 200: {dict(errors)}")
    # An event answered 200 is stored: the reader must see it. One not answered (the server too slow
    # for the pace, the connection refused) was never accepted: the gateway would send it again.
    common.check(
        reader.unseen() == 0, f"end to end: {reader.unseen()} of {answered} answered never seen in 30 s"
    )
    ids = (ids_before + 1, event_ids())
    if answered == count:
        states = check_applied(blast, count, messages, ids, "end to end")
    else:
        states = event_states(ids)
        stored = sum(states.values())
        common.check(stored >= answered, f"end to end: {answered} answered 200, {stored} stored")
        common.check(all_applied(states), f"end to end: not every event applied or no change: {dict(states)}")
    sent = [s for _, s, _, _ in results]
    late = [s - planned for planned, s, _, _ in results]
    answers = [done - s for _, s, done, status in results if status == 200]
    last_answer = max(done for _, _, done, status in results if status == 200)
    return {
        "count": count,
        "rate": (count - 1) / (max(sent) - min(sent)),
        "answered_rate": answered / (last_answer - min(sent)),
        "latencies": reader.latencies,
        "answers": answers,
        "late_p99": percentile(late, 0.99),
        "polls": reader.polls,
        "states": states,
        "answered": answered,
        "errors": errors,
    }


def bench(smoke: bool) -> list[common.Row]:
    from django.conf import settings

    from blasts.models import StatusHistory, WebhookEvent

    size = SMOKE if smoke else FULL
    messages = size["messages"]
    idle, _ = appliers_run(1)  # nothing to apply yet: the command's start-up and exit alone
    blast = seed(messages)
    secret = settings.WSAPME_WEBHOOK_SECRETS[0]
    load = LoadGenerator(0, secret, messages)
    with Gunicorn() as server:
        load.port = server.port
        common.say(
            f"gunicorn, {server.workers()} workers; {size['connections']} connections, warm-up {size['warmup']:g} s"
        )
        # 1. Ingestion, no applier running: the backlog builds.
        load.run(size["connections"], size["warmup"])
        warm = len(load.results)
        load.run(1, size["warmup"])  # one at a time: the answer time with no queue
        alone = [end - start for start, end, _ in load.results[warm:]]
        warm = len(load.results)
        common.say(f"posting status events for {size['seconds']:g} s, no applier running")
        workers = server.workers()
        meter = common.CpuMeter({"gunicorn": server.pids, "load generator": lambda: [os.getpid()]}).start()
        start = time.perf_counter()
        load.run(size["connections"], size["seconds"])
        wall = time.perf_counter() - start
        meter.stop()
        backlog = (1, event_ids())
        stored = WebhookEvent.objects.filter(state=WebhookEvent.State.RECEIVED).count()
        floors = {name: floor_rate(server, path, size) for name, path in FLOORS.items()}

        # 2. The applier on that backlog, then two of them on a fresh one of the same shape.
        sent = len(load.results)
        common.say(f"apply_events --batch {APPLIER_BATCH} on the backlog of {stored} events")
        one_wall, one_meter = appliers_run(1)
        one_states = check_applied(blast, sent, messages, backlog, "one applier")
        fresh = seed(messages, first=messages + 1)
        ids = backlog_store(sent, messages, first=messages + 1)
        common.say(f"2 x apply_events --batch {APPLIER_BATCH} at once on a fresh backlog of {sent} events")
        two_wall, two_meter = appliers_run(2)
        check_applied(fresh, sent, messages, ids, "two appliers")

        # 3. End to end, the applier running.
        common.say(
            f"end to end: {E2E_RATE:g} events/s for {size['e2e_seconds']:g} s, apply_events --loop running"
        )
        e2e = end_to_end(server, secret, size["e2e_seconds"], first=2 * messages + 1)
    common.say(f"pgbench -N, {workers} clients (one per worker), {size['pgbench_seconds']} s")
    tps = pgbench_tps(workers, size["pgbench_seconds"], size["pgbench_scale"])

    measured = load.results[warm:]
    answered = [status for _, _, status in load.results]
    ok = answered.count(200)
    common.check(ok == sent, f"{sent - ok} of {sent} events were not answered 200: {sorted(set(answered))}")
    common.check(stored == sent, f"{sent} events sent, {stored} stored: {sent - stored} lost")
    applied = WebhookEvent.objects.filter(state=WebhookEvent.State.APPLIED).count()
    history = StatusHistory.objects.filter(source=StatusHistory.Source.WEBHOOK).count()
    common.check(history == applied, f"{applied} events applied, but {history} history rows")

    rate = len(measured) / wall
    latencies = [end - start for start, end, _ in measured]
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    insert_floor = floors[INSERT][0]
    cpu = f"CPU ms an event: {meter.per(len(measured))}."
    one_rate, two_rate = sent / one_wall, sent / two_wall
    drain = max(one_wall - idle, 1e-9)
    e2e_p50, e2e_p99 = statistics.median(e2e["latencies"]), percentile(e2e["latencies"], 0.99)
    answer_p99 = percentile(e2e["answers"], 0.99)
    pgbench = f"pgbench -N {tps:.0f} tps"
    tally = lambda states: ", ".join(f"{n} {state}" for state, n in sorted(states.items()))  # noqa: E731
    return [
        common.Row(
            f"3. Webhook ingestion, {size['connections']} connections, no applier running",
            f"{rate:.0f} events/s",
            f"one-INSERT floor {insert_floor:.0f} requests/s",
            f"{rate / insert_floor:.2f}x",
            f"≥ {TARGET_FLOOR_RATIO:g}x the one-INSERT floor",
            rate >= TARGET_FLOOR_RATIO * insert_floor,
            f"{len(measured)} events in {wall:.1f} s after a {size['warmup']:g} s warm-up; gunicorn with "
            f"blastsite/gunicorn.py ({workers} gthread workers), DEBUG off, a new connection per event; "
            f"no applier running, so the backlog builds (applied below). {cpu} {rate / tps:.3f}x {pgbench}.",
        ),
        *(
            common.Row(
                f"3. Floor: {name}",
                f"{floor:.0f} requests/s",
                pgbench,
                f"{floor / tps:.3f}x",
                "—",
                None,
                f"The same load ({size['connections']} connections, {size['seconds']:g} s, a new connection "
                f"each) on {FLOORS[name]} (bench/floor.py, served by the bench only): {count} requests, "
                f"p99 {floor_p99 * 1000:.1f} ms. The webhook is {rate / floor:.2f}x this.",
            )
            for name, (floor, floor_p99, count) in floors.items()
        ),
        common.Row(
            "3. Webhook latency p50 / p99",
            f"{p50 * 1000:.1f} / {p99 * 1000:.1f} ms",
            f"one-INSERT floor p99 {floors[INSERT][1] * 1000:.1f} ms",
            f"p99 {p99 / floors[INSERT][1]:.2f}x floor, {p99 / TARGET_P99:.2f}x target",
            f"p99 < {TARGET_P99 * 1000:.0f} ms",
            p99 < TARGET_P99,
            f"Answer time seen by the load generator (connect, send, full answer) with {size['connections']} "
            f"in flight, max {max(latencies) * 1000:.1f} ms; {size['connections']} in flight ÷ rate = "
            f"{size['connections'] / rate * 1000:.1f} ms is the mean a closed loop must see. One at a time "
            f"({len(alone)} events): p50 {statistics.median(alone) * 1000:.1f} ms, "
            f"p99 {percentile(alone, 0.99) * 1000:.1f} ms.",
        ),
        common.Row(
            "3. Webhook events lost",
            f"{sent - stored} of {sent}",
            f"{stored} stored",
            f"{stored / sent:.4f} stored/sent",
            "0 lost",
            stored == sent,
            f"Every event answered 200 and stored unapplied (warm-up and one-at-a-time included); "
            f"then applied by one applier: {tally(one_states)}.",
        ),
        common.Row(
            f"3. Applier: apply_events --batch {APPLIER_BATCH}, 1 process",
            f"{one_rate:.0f} events/s",
            pgbench,
            f"{one_rate / tps:.3f}x",
            f"≥ {TARGET_APPLIER:.0f} events/s",
            one_rate >= TARGET_APPLIER,
            f"The ingestion's backlog, {sent} events, applied in {one_wall:.2f} s from the command's start to "
            f"its exit; the same command with nothing to apply takes {idle:.2f} s (start-up), so "
            f"{sent / drain:.0f} events/s once started. Every event applied or no change, every recipient "
            f"at the last status posted for it. CPU ms an event: {one_meter.per(sent)}.",
        ),
        common.Row(
            f"3. Applier: apply_events --batch {APPLIER_BATCH}, 2 processes at once",
            f"{two_rate:.0f} events/s",
            f"1 process {one_rate:.0f} events/s",
            f"{two_rate / one_rate:.2f}x",
            f"≥ {TARGET_APPLIER:.0f} events/s",
            two_rate >= TARGET_APPLIER,
            f"A fresh backlog of the same {sent} events for another {messages} recipients (stored as the "
            f"webhook stores them), applied in {two_wall:.2f} s by two commands started together (FOR "
            f"UPDATE SKIP LOCKED); all applied or no change, statuses right. CPU ms an event: "
            f"{two_meter.per(sent)}.",
        ),
        common.Row(
            f"3. End to end at {E2E_RATE:.0f} events/s: answered → funnel shows it, p50 / p99",
            f"{e2e_p50 * 1000:.0f} / {e2e_p99 * 1000:.0f} ms",
            f"webhook answer p99 {answer_p99 * 1000:.1f} ms",
            f"p99 {e2e_p99 / TARGET_E2E_P99:.2f}x target",
            f"p99 < {TARGET_E2E_P99 * 1000:.0f} ms at {E2E_RATE:.0f}/s",
            e2e_p99 < TARGET_E2E_P99
            and min(e2e["rate"], e2e["answered_rate"]) >= 0.97 * E2E_RATE
            and e2e["answered"] == e2e["count"],
            f"{e2e['count']} events paced (open loop) at {e2e['rate']:.0f}/s sent (p99 "
            f"{e2e['late_p99'] * 1000:.1f} ms behind plan), {e2e['answered_rate']:.0f}/s answered 200 (first "
            f"sent to last answered), for {size['e2e_seconds']:g} s, apply_events --loop "
            f"--batch {APPLIER_BATCH} running, woken by NOTIFY. Latency: from the client's answer to the first "
            f"of a reader's looks (every {POLL_EVERY * 1000:.0f} ms, its own connection, {e2e['polls']} looks) "
            f"whose result shows the recipient at that status or later, max {max(e2e['latencies']) * 1000:.0f} ms. "
            f"Events: {tally(e2e['states'])}; answered 200: {e2e['answered']} of {e2e['count']}"
            + (f" (no answer: {dict(e2e['errors'])})" if e2e["errors"] else "")
            + ".",
        ),
        common.Row(
            "3. pgbench -N (the database's ceiling)",
            f"{tps:.0f} tps",
            "—",
            "—",
            "—",
            None,
            f"pgbench's simple-update transaction, {workers} clients (one per gunicorn worker), "
            f"{size['pgbench_seconds']} s, scale {size['pgbench_scale']}, on the same database after the above.",
        ),
    ]


if __name__ == "__main__":
    common.main(__doc__, bench)
