"""21. Tracked links: the /l/<code> redirect under load, and a flood of unknown codes.

Both servers of the redirect on loopback with production settings: `manage.py serve_links` (the
target's) and the web (gunicorn as bench/webhooks.py serves the webhook). Each gets the links of a sent
blast of its own (half its recipients delivered, half read), so each sees as many first clicks;
a closed loop of 16 clients, a new connection per request, asks for them in a realistic mix:
mostly known codes picked at random (so a recipient's first click, and later ones), some repeats of
one much-shared code, some WhatsApp link previews, some unknown codes. In the same run, the bare
Django view floor (bench/floor.py) under the same load, and one request at a time (the answer time with
no queue). Then a flood of unknown codes at serve_links: the rows of every table it could write are
counted before and after. Every known request must be answered 302 and kept as a Click, every first click counted
once, every unknown one 404.
"""

import asyncio
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

from bench import common
from bench.webhooks import Gunicorn, floor_rate, percentile

FULL = {"links": 20000, "warmup": 3.0, "seconds": 20.0, "connections": 16, "flood": 5.0}
SMOKE = {"links": 200, "warmup": 0.5, "seconds": 2.0, "connections": 4, "flood": 1.0}
TARGET_RATE, TARGET_P99, TARGET_ALONE = 2000.0, 0.020, 0.010  # redirects/s; p99 s under load; s alone
# The mix, by share of requests: a known code at random, the one shared code, a known code fetched
# by WhatsApp's link preview, an unknown code.
MIX = {"known": 0.80, "shared": 0.10, "preview": 0.05, "unknown": 0.05}
BROWSER = (
    "Mozilla/5.0 (Linux; Android 14; SM-A546E) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile"
)
WHATSAPP = "WhatsApp/2.24.12.78 A"


def seed(count: int, name: str) -> list[str]:
    """A blast sent three minutes ago to `count` recipients, each with one tracked link: their codes."""
    from django.db import connection

    from blasts.models import BlastRecipient, Link

    Status = BlastRecipient.Status
    blast = common.sent_blast(
        name,
        "generate_series(1, %s) AS g",
        (count,),
        message_id=f"'3EB0{name[0]}' || lpad(g::text, 10, '0')",
        status=f"CASE WHEN mod(g, 2) = 0 THEN {int(Status.DELIVERY_ACK)} ELSE {int(Status.READ_ACK)} END",
    )
    common.insert_select(
        Link,
        {
            "code": "substr(md5('link' || r.id), 1, 16)",  # 16 of token_urlsafe's characters, as links_render's
            "recipient_id": "r.id",
            "position": "0",
            "url": "'https://shop.example.com/sale?item=' || r.id",
            "created_at": "now() - interval '3 minutes'",
        },
        f"{BlastRecipient._meta.db_table} r WHERE r.blast_id = %s",
        (blast.pk,),
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Link._meta.db_table}")
    return list(Link.objects.filter(recipient__blast=blast).values_list("code", flat=True))


def unknown_code() -> str:
    return secrets.token_urlsafe(12)


class Clicks:
    """Closed loop: `connections` clients, each asking for one link and waiting for the answer, again
    and again, a new connection each time (as phones come and go)."""

    def __init__(self, port: int, codes: list[str], *, mix: dict[str, float] = MIX, seed: int = 21):
        self.port, self.codes, self.random = port, codes, random.Random(seed)
        self.kinds, self.weights = list(mix), list(mix.values())
        self.results: list[tuple[float, float, int, str]] = []  # (start, end, HTTP status, kind)

    def request(self) -> tuple[bytes, str]:
        kind = self.random.choices(self.kinds, self.weights)[0]
        code = {
            "known": lambda: self.random.choice(self.codes),
            "shared": lambda: self.codes[0],
            "preview": lambda: self.random.choice(self.codes),
            "unknown": unknown_code,
        }[kind]()
        agent = WHATSAPP if kind == "preview" else BROWSER
        head = (
            f"GET /l/{code} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {agent}\r\n"
            "X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
        )
        return head.encode(), kind

    async def one(self) -> None:
        data, kind = self.request()
        start = time.perf_counter()
        try:
            status = common.http_status(await common.http_exchange(self.port, data))
        except (OSError, ValueError):
            status = 0
        self.results.append((start, time.perf_counter(), status, kind))

    def run(self, connections: int, seconds: float) -> None:
        until = time.perf_counter() + seconds

        async def client():
            while time.perf_counter() < until:
                await self.one()

        async def main():
            await asyncio.gather(*(client() for _ in range(connections)))

        asyncio.run(main())


def counts() -> dict[str, int]:
    """Rows of every table a request for a link could write."""
    from blasts.models import BlastRecipient, Click, Link, StatusHistory

    return {
        "clicks": Click.objects.count(),
        "links": Link.objects.count(),
        "history": StatusHistory.objects.count(),
        "clicked recipients": BlastRecipient.objects.filter(clicked_at__isnull=False).count(),
    }


class LinkServer:
    """`manage.py serve_links` on a loopback port (its default workers: one a core), as production runs it."""

    def __init__(self):
        self.port = common.free_port()
        command = [sys.executable, "manage.py", "serve_links", "--bind", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(command, cwd=common.ROOT, stdout=sys.stderr)
        deadline = time.monotonic() + 60
        while not self.answers():
            common.check(
                self.proc.poll() is None and time.monotonic() < deadline, "serve_links did not start"
            )
            time.sleep(0.2)

    def answers(self) -> bool:
        try:
            return (
                asyncio.run(common.http_exchange(self.port, b"GET /l/x HTTP/1.1\r\nHost: x\r\n\r\n")) != b""
            )
        except OSError:
            return False

    def pids(self) -> list[int]:
        return common.with_children(self.proc.pid)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Run(NamedTuple):
    """One server's run of the mix: its answers, the measured part's rate and latencies, one at a time."""

    load: Clicks
    measured: list
    wall: float
    alone: list[float]
    meter: common.CpuMeter

    @property
    def rate(self) -> float:
        return len(self.measured) / self.wall

    def redirects(self) -> list[float]:
        return [end - begin for begin, end, status, _ in self.measured if status == 302]


def mix_run(port: int, codes: list[str], size: dict, pids, name: str) -> Run:
    """The mix against one server: a warm-up, one request at a time (the answer with no queue), then
    `connections` in flight for `seconds`, its CPU metered."""
    load = Clicks(port, codes)
    load.run(size["connections"], size["warmup"])
    warm = len(load.results)
    load.run(1, size["warmup"])
    alone = [end - start for start, end, status, _ in load.results[warm:] if status == 302]
    warm = len(load.results)
    common.say(f"{name}: asking for links for {size['seconds']:g} s, {size['connections']} connections")
    meter = common.CpuMeter({name: pids, "load generator": lambda: [os.getpid()]}).start()
    start = time.perf_counter()
    load.run(size["connections"], size["seconds"])
    wall = time.perf_counter() - start
    meter.stop()
    return Run(load, load.results[warm:], wall, alone, meter)


def bench(smoke: bool) -> list[common.Row]:
    from django.db.models import Count

    from blasts.models import BlastRecipient, Click, StatusHistory

    size = SMOKE if smoke else FULL
    # Fresh links for each server, so each sees as many first clicks.
    web_codes, our_codes = seed(size["links"], "Web links"), seed(size["links"], "Served links")
    with Gunicorn() as server:
        web = mix_run(server.port, web_codes, size, server.pids, "gunicorn")
        workers = server.workers()
        common.say("the bare Django view floor, same load")
        floor, floor_p99, floor_count = floor_rate(
            server, "/bench/floor/bare", size | {"messages": size["links"]}
        )
    with LinkServer() as links:
        ours = mix_run(links.port, our_codes, size, links.pids, "serve_links")
        stored = counts()
        common.say(f"a flood of unknown codes for {size['flood']:g} s")
        before = counts()
        flood = Clicks(links.port, our_codes, mix={"unknown": 1.0})
        started = time.perf_counter()
        flood.run(size["connections"], size["flood"])
        flood_wall = time.perf_counter() - started
        after = counts()

    answers = [(status, kind) for run in (web, ours) for _, _, status, kind in run.load.results]
    known = [status for status, kind in answers if kind != "unknown"]
    wrong = {(status, kind) for status, kind in answers if status != (404 if kind == "unknown" else 302)}
    common.check(
        not wrong, f"answers other than 302 for known codes and 404 for unknown ones: {sorted(wrong)}"
    )
    common.check(
        stored["clicks"] == len(known), f"{len(known)} known links asked for, {stored['clicks']} clicks kept"
    )
    previews = Click.objects.filter(preview=True).count()
    wanted = sum(kind == "preview" for _, kind in answers)
    common.check(previews == wanted, f"{wanted} WhatsApp previews, {previews} clicks kept as previews")
    clicked = Click.objects.filter(preview=False).values("link__recipient").distinct().count()
    common.check(
        stored["clicked recipients"] == clicked,
        f"{clicked} recipients clicked, {stored['clicked recipients']} counted",
    )
    advanced = StatusHistory.objects.filter(source=StatusHistory.Source.CLICK)
    once = advanced.values("recipient").distinct().count()
    common.check(advanced.count() == once, f"{advanced.count()} click history rows for {once} recipients")
    unmoved = BlastRecipient.objects.filter(
        clicked_at__isnull=False, status=BlastRecipient.Status.DELIVERY_ACK
    ).count()
    common.check(unmoved == 0, f"{unmoved} delivered recipients clicked and still delivered, not read")
    moved = dict(
        advanced.values("recipient__blast__tag")
        .annotate(n=Count("id"))
        .values_list("recipient__blast__tag", "n")
    )
    flood_statuses = {status for _, _, status, _ in flood.results}
    common.check(flood_statuses == {404}, f"the flood of unknown codes answered {sorted(flood_statuses)}")
    common.check(before == after, f"the flood of unknown codes wrote: before {before}, after {after}")

    redirects = ours.redirects()
    p50, p99 = statistics.median(redirects), percentile(redirects, 0.99)
    alone_p50, alone_p99 = statistics.median(ours.alone), percentile(ours.alone, 0.99)
    web_p99 = percentile(web.redirects(), 0.99)
    latencies = [end - begin for begin, end, _, _ in ours.measured]
    shares = ", ".join(f"{share:.0%} {kind}" for kind, share in MIX.items())
    return [
        common.Row(
            f"21. Tracked link redirects (manage.py serve_links), {size['connections']} connections",
            f"{ours.rate:.0f} requests/s",
            f"bare Django view floor {floor:.0f} requests/s",
            f"{ours.rate / floor:.2f}x",
            f"≥ {TARGET_RATE:.0f}/s",
            ours.rate >= TARGET_RATE,
            f"{len(ours.measured)} requests for /l/<code> in {ours.wall:.1f} s after a {size['warmup']:g} s "
            f"warm-up ({shares}) over {len(our_codes)} links; {moved.get('Served links', 0)} recipients moved "
            f"to READ_ACK by a first click. uvicorn (httptools, uvloop), one worker a core, the click's one "
            f"prepared statement on the worker's own asynchronous connections, a first click's ledger write on "
            f"a thread; a new connection per request. Over both servers every known code was answered 302 "
            f"and kept as a Click ({stored['clicks']} in all, {previews} previews), every unknown one 404. "
            f"The floor: the same load on /bench/floor/bare (bench/floor.py) under gunicorn, {floor_count} "
            f"requests, p99 {floor_p99 * 1000:.1f} ms. CPU ms a request: {ours.meter.per(len(ours.measured))}.",
        ),
        common.Row(
            "21. Tracked link redirects served by the web (gunicorn, blastsite/wsgi.py)",
            f"{web.rate:.0f} requests/s",
            f"bare Django view floor {floor:.0f} requests/s",
            f"{web.rate / floor:.2f}x; serve_links {ours.rate / web.rate:.2f}x this",
            "—",
            None,
            f"The same mix on {len(web_codes)} other links ({moved.get('Web links', 0)} moved to READ_ACK), "
            f"gunicorn with blastsite/gunicorn.py ({workers} gthread workers), p99 {web_p99 * 1000:.1f} ms. "
            f"CPU ms a request: {web.meter.per(len(web.measured))}.",
        ),
        common.Row(
            "21. Tracked link redirect p50 / p99 (serve_links)",
            f"{p50 * 1000:.1f} / {p99 * 1000:.1f} ms",
            f"bare Django view floor p99 {floor_p99 * 1000:.1f} ms",
            f"p99 {p99 / floor_p99:.2f}x floor, {p99 / TARGET_P99:.2f}x target",
            f"p99 < {TARGET_P99 * 1000:.0f} ms",
            p99 < TARGET_P99,
            f"The 302s' answer time seen by the load generator (connect, send, full answer) with "
            f"{size['connections']} in flight, max {max(latencies) * 1000:.1f} ms over all answers.",
        ),
        common.Row(
            "21. Tracked link redirect, one at a time, p50 / p99 (serve_links)",
            f"{alone_p50 * 1000:.1f} / {alone_p99 * 1000:.1f} ms",
            f"{size['connections']} in flight p50 {p50 * 1000:.1f} ms",
            f"p99 {alone_p99 / TARGET_ALONE:.2f}x target",
            f"< {TARGET_ALONE * 1000:.0f} ms",
            alone_p99 < TARGET_ALONE,
            f"{len(ours.alone)} redirects, one connection, no queue: what a person's phone waits for.",
        ),
        common.Row(
            "21. Flood of unknown codes (serve_links): rows written",
            f"{sum(after.values()) - sum(before.values())}",
            f"{len(flood.results) / flood_wall:.0f} requests/s, all 404",
            f"{len(flood.results) / flood_wall / floor:.2f}x the bare view floor",
            "0",
            before == after,
            f"{len(flood.results)} requests for random 16-character codes in {flood_wall:.1f} s, "
            f"{size['connections']} connections; rows counted before and after: "
            + ", ".join(f"{name} {before[name]} → {after[name]}" for name in before)
            + ". Each costs one lookup by primary key and writes nothing: its rate is the most any "
            "redirect that reads its link from the database could reach here, whatever it did with writes.",
        ),
    ]


if __name__ == "__main__":
    common.main(__doc__, bench)
