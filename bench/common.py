"""What the benchmark scripts share: their own PostgreSQL database, production settings, the sandbox
gateway in a process of its own, bulk seeding, CPU accounting, and the result rows run.py prints.

A script runs alone too: `.venv/bin/python -m bench.send [--smoke]`. It makes its database
(`<name>_bench` on the server of DATABASE_URL) if missing, migrates it and empties the app's tables.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/blasts_bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    """One line of the results table; `ok` is None where the figure has no target."""

    figure: str
    measured: str
    reference: str  # what it is compared with, measured in the same run
    ratio: str
    target: str
    ok: bool | None
    notes: str = ""


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else "pass" if ok else "MISS"


def table(rows: list[Row]) -> str:
    """The rows as aligned plain text."""
    header = ("figure", "measured", "reference (same run)", "ratio", "target", "result")
    lines = [header, *((r.figure, r.measured, r.reference, r.ratio, r.target, verdict(r.ok)) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def bench_database_url(url: str | None, *, smoke: bool) -> str:
    """The benchmarks' own database on the server of `url`: `<name>_bench` (`_bench_smoke` for smoke runs).

    It is dropped and made again, so it is never the database `url` names unless that ends in _bench.
    """
    parts = urlsplit(url or DEFAULT_DATABASE_URL)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit("The benchmarks need PostgreSQL: set DATABASE_URL=postgres://user@host:port/name.")
    name = parts.path.lstrip("/") or "blasts"
    name = name if name.endswith("_bench") else f"{name}_bench"
    return urlunsplit(parts._replace(path=f"/{name}_smoke" if smoke else f"/{name}"))


def _connect_server(url: str) -> psycopg.Connection:
    parts = urlsplit(url)
    return psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        dbname="postgres",
        autocommit=True,
    )


def database_create(url: str, *, fresh: bool = False) -> None:
    name = urlsplit(url).path.lstrip("/")
    with _connect_server(url) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def database_drop(url: str) -> None:
    with _connect_server(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


def production_env(database_url: str) -> dict[str, str]:
    """Production settings (DEBUG off, a random key and webhook secret), the bench database, sandbox
    mode, pacing off. Nothing .env.example names is inherited from the developer's environment."""
    documented = {
        line.split("=", 1)[0].strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    env = {name: value for name, value in os.environ.items() if name not in documented}
    return env | {
        "DJANGO_SETTINGS_MODULE": "blastsite.settings",
        "ENV_FILE": "/nonexistent",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "ADMIN_PATH": f"admin-{secrets.token_hex(4)}/",
        # Production sits behind a proxy that ends TLS; requests from the bench say X-Forwarded-Proto: https.
        "TRUST_X_FORWARDED_PROTO": "true",
        "STATIC_ROOT": str(Path(tempfile.gettempdir()) / "blasts-bench-static"),
        "WSAPME_TOKEN": "",
        "WSAPME_SANDBOX": "true",
        "WSAPME_WEBHOOK_SECRETS": secrets.token_urlsafe(24),
        "SEND_RATE_PER_MINUTE": "0",  # pacing off
        "SEND_JITTER": "0",
        "POLL_RATE_PER_SECOND": "0",
        # The sandbox posts no webhooks here, so no send is ever delivered: the delivery-health
        # breaker would rightly pause a blast still sending after DELIVERY_HEALTH_WAIT.
        "DELIVERY_HEALTH_WINDOW": "0",
    }


def setup(description: str) -> argparse.Namespace:
    """Parse --smoke/--json, point this process at the bench database with production settings,
    make and migrate the database, empty the app's tables. Import the app only after this."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds long: proves it runs")
    parser.add_argument("--json", type=Path, help="also write the result rows here, as JSON")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL") or bench_database_url(
        os.environ.get("DATABASE_URL"), smoke=args.smoke
    )
    env = production_env(url)
    for name in set(os.environ) - set(env):
        del os.environ[name]
    os.environ.update(env)
    Path(env["STATIC_ROOT"]).mkdir(exist_ok=True)
    database_create(url)

    import django
    from django.apps import apps
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    call_command("migrate", verbosity=0)
    tables = [model._meta.db_table for model in apps.get_app_config("blasts").get_models()]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    return args


def main(description: str, bench) -> None:
    """A script's entry point: set up, run `bench(smoke)`, print and write its rows."""
    args = setup(description)
    finish(args, bench(args.smoke))


def finish(args: argparse.Namespace, rows: list[Row]) -> None:
    """Print the rows (and their notes), and write them for run.py. A smoke run's sizes are too small
    for its figures to mean anything, so it gives no verdicts."""
    for row in rows if args.smoke else ():
        row.ok = None
    print(table(rows))
    for row in rows:
        if row.notes:
            print(f"  {row.figure}: {row.notes}")
    sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=1))


def check(condition: bool, message: str) -> None:
    """A benchmark whose work went wrong (lost events, unsent messages) fails, whatever its speed."""
    if not condition:
        raise SystemExit(f"FAILED: {message}")


def say(text: str) -> None:
    print(f"  {text}", flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores: what every process used."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def database_backends(database: str) -> list[int]:
    """The PostgreSQL backends connected to `database` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # not a process, or it ended meanwhile
            continue
        if entry.name.isdigit() and title.startswith("postgres: ") and f" {database} " in title:
            found.append(int(entry.name))
    return found


def with_children(pid: int) -> list[int]:
    """A process and its children now (a server's master and workers); none once it has ended."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid, *map(int, children)]


class CpuMeter:
    """CPU used between start() and stop() by groups of processes, looked up again every 0.2 s as they
    come and go (one born meanwhile counts from 0), among them the PostgreSQL backends of this
    database; and by the whole machine, other processes too."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]):
        from django.db import connection

        database = connection.settings_dict["NAME"]
        self.groups = groups | {"database": lambda: database_backends(database)}
        self.seen: dict[tuple[str, int], float] = {}
        self._done = threading.Event()

    def _look(self) -> None:
        for name, find in self.groups.items():
            for pid in find():
                with contextlib.suppress(OSError):  # it ended meanwhile: its last sample stands
                    self.seen[name, pid] = cpu_seconds(pid)

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            self._look()

    def start(self) -> "CpuMeter":
        self._look()
        self.first, self.machine_first = dict(self.seen), machine_cpu()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        return self

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._watcher.join()
        self._look()
        busy, total = (end - begin for end, begin in zip(machine_cpu(), self.machine_first, strict=True))
        self.used = {name: 0.0 for name in self.groups}
        for (name, pid), cpu in self.seen.items():
            self.used[name] += cpu - self.first.get((name, pid), 0.0)
        self.machine_busy, self.machine_total = busy, total
        return self.used

    def per(self, count: int) -> str:
        """CPU milliseconds per unit of work, by whom, and how busy the machine was."""
        other = max(self.machine_busy - sum(self.used.values()), 0.0)
        parts = [f"{name} {seconds / count * 1000:.2f}" for name, seconds in self.used.items()]
        return (
            f"{', '.join(parts)}, other processes {other / count * 1000:.2f} ms; the machine's cores "
            f"were {self.machine_busy / self.machine_total:.0%} busy"
        )


async def http_exchange(port: int, data: bytes) -> bytes:
    """One raw HTTP/1.1 request to the server on 127.0.0.1 (a new connection, closed by it): the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    answer = await reader.read()
    writer.close()
    return answer


def http_status(answer: bytes) -> int:
    """The status code of a raw HTTP answer (0: none)."""
    return int(answer[9:12]) if answer.startswith(b"HTTP/1.") else 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, alive, timeout: float = 60, headers: dict | None = None) -> None:
    """Wait for `url` to answer 200, as long as `alive()` says the server still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check(alive(), f"the server for {url} exited")
        try:
            if requests.get(url, timeout=2, headers=headers, allow_redirects=False).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or its workers still starting
            pass
        time.sleep(0.1)
    raise SystemExit(f"FAILED: {url} did not answer within {timeout:g}s")


def serve_sandbox(port: int, latency: float) -> None:
    """The sandbox gateway (blasts/sandbox.py) as shipped, in this process."""
    from blasts.gateway.sandbox import Sandbox
    from blasts.gateway.sandbox_messages import SandboxConfig

    Sandbox(SandboxConfig(latency=float(latency)), port=port).serve_forever()


class SandboxProcess:
    """The sandbox gateway in its own process (so it does not share this one's GIL), no webhooks."""

    def __init__(self, latency: float = 0.0):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = multiprocessing.get_context("spawn").Process(
            target=serve_sandbox, args=(port, latency), daemon=True
        )
        self.proc.start()
        wait_until_up(f"{self.url}/_sandbox/config", lambda: self.proc.is_alive())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.join(timeout=10)

    def configure(self, **knobs) -> None:
        requests.post(f"{self.url}/_sandbox/config", json=knobs, timeout=10).raise_for_status()

    def calls(self) -> list[dict]:
        return requests.get(f"{self.url}/_sandbox/calls", timeout=60).json()["calls"]

    def client(self):
        return gateway_client(self.url)


def gateway_client(url: str):
    """The product's WSAPME client, pointed at a sandbox with the token it accepts."""
    from django.conf import settings

    from blasts.gateway.client import WsapmeClient

    return WsapmeClient(url, settings.WSAPME_SANDBOX_TOKEN)


def round_trip(client, count: int = 10) -> float:
    """The median seconds of one send through `client`, nothing else: the gateway's latency as we see it."""
    times = []
    for n in range(count):
        start = time.perf_counter()
        client.send(device="sandbox", to=f"+60129{n:06d}", message="latency probe")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def send_bare(client, count: int, concurrency: int) -> list[str | None]:
    """`count` sends through `client` from `concurrency` threads, nothing else done: their message ids."""
    ids: list[str | None] = [None] * count

    def work(share):
        for n in share:
            result = client.send(device="sandbox", to=f"+6013{n:07d}", message=f"Hello Customer {n}")
            ids[n] = result.message_id

    threads = [
        threading.Thread(target=work, args=(range(n, count, concurrency),)) for n in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ids


class DiscardedConnections(logging.Handler):
    """Counts urllib3's "Connection pool is full, discarding connection" while installed."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        self.count += record.getMessage().startswith("Connection pool is full")

    def __enter__(self):
        logging.getLogger("urllib3.connectionpool").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("urllib3.connectionpool").removeHandler(self)


def insert_select(model, values: dict[str, str], source: str, params: tuple = ()) -> int:
    """INSERT INTO model's table SELECT `values` (column -> SQL expression) FROM `source`.

    Every other column gets the field's default, so a column added later does not break seeding.
    `values` hold no parameters (numbers are written in); `params` are the FROM clause's %s.
    """
    from django.db import connection

    columns, expressions, defaults = [], [], []
    for field in model._meta.concrete_fields:
        if field.column in values:
            expressions.append(values[field.column])
        elif field.primary_key:
            continue
        else:
            expressions.append("%s")
            defaults.append(field.get_db_prep_save(field.get_default(), connection))
        columns.append(field.column)
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(expressions)} FROM {source}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*defaults, *params])
        return cursor.rowcount


def queued_blast(count: int, *, first_phone: int = 0):
    """A queued blast with `count` recipients, inserted in bulk (a 100,000-recipient blast in seconds),
    then ANALYZEd as autovacuum soon would be: stale statistics make the claim query plan badly."""
    from django.db import connection

    from blasts.models import Blast, BlastRecipient

    blast = Blast.objects.create(
        tag="Benchmark",
        message="Hello {first_name}, our new collection is in store this week.",
        device="sandbox",
        state=Blast.State.QUEUED,
    )
    insert_select(
        BlastRecipient,
        {
            "blast_id": str(int(blast.pk)),
            "phone": f"'+6012' || lpad((g + {int(first_phone)})::text, 7, '0')",
            "name": "'Customer ' || g",
        },
        "generate_series(1, %s) AS g",
        (count,),
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {BlastRecipient._meta.db_table}")
    return blast


def sent_blast(tag: str, source: str, params: tuple, *, message_id: str, **columns: str):
    """A completed blast with one PENDING recipient (number g, from 1) for each row of `source`, sent
    three minutes ago under the message id the SQL expression `message_id` gives."""
    from blasts.models import Blast, BlastRecipient

    blast = Blast.objects.create(tag=tag, message="Hello", device="sandbox", state=Blast.State.COMPLETED)
    values = {
        "blast_id": str(blast.pk),
        "phone": "'+6012' || lpad(g::text, 7, '0')",
        "message_id": message_id,
        "status": str(BlastRecipient.Status.PENDING.value),
        "sent_at": "now() - interval '3 minutes'",
    }
    insert_select(BlastRecipient, values | columns, source, params)
    return blast


def median_ms(action, repeats: int) -> float:
    """The median wall time of `action`, in milliseconds, over `repeats` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def count_queries(action) -> int:
    """How many queries `action` runs."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        action()
    return len(queries)


def rss_mb(pid: int) -> float | None:
    """A process's resident memory now, in MB (None once it has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(
        (int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), None
    )


def run_measured(
    command: list[str], *, env: dict | None = None, every: float = 2.0
) -> tuple[float, float, list[float], str]:
    """Run `command` in its own process: (seconds, peak RSS MB as the kernel counts it, RSS MB sampled
    every `every` seconds, its stdout). A failure stops the benchmark with the end of its stderr."""
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=errors)
        samples: list[float] = []
        done = threading.Event()

        def sample():
            while not done.wait(every):
                if (mb := rss_mb(proc.pid)) is not None:
                    samples.append(mb)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        output.seek(0), errors.seek(0)
        code = os.waitstatus_to_exitcode(status)
        check(code == 0, f"{' '.join(command[1:4])} exited {code}: {errors.read()[-2000:]!r}")
        return seconds, usage.ru_maxrss / 1024, samples, output.read().decode()  # ru_maxrss: KiB
