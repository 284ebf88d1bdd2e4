"""4. Reporting at scale: 1,000,000 recipients over 2,000 blasts (120 days), with their history.

Milliseconds (median of repeated runs, warm cache) and query counts of: one blast's funnel and its
stuck breakdown (the selectors), the list of 50 blasts with metrics (the API) and the list page
(HTML, with totals over every blast), the overview over a month (HTML), and a new blast's preview
of 1,000 pasted lines (compared with parsing the lines alone). The pages go through
the whole Django stack in process (middleware, session, templates), not over HTTP. Each is
compared with one raw count(*) over the same recipients in the same run: the least any query
answering it must read.

BENCH_SCALE=N (`make bench SCALE=N`, `python -m bench.run --scale N`) multiplies the blasts by N over
the same 120 days (so a month holds N times the blasts, each still of 500 recipients) and adds a row
for the seeding time; the targets stay those of the full size, so at N times they are informational.
"""

import os
import statistics
import time
from datetime import timedelta
from functools import partial

from bench import common

FULL = {"blasts": 2000, "per_blast": 500, "days": 120, "samples": 20, "repeats": 7, "preview": 1000}
SMOKE = {"blasts": 20, "per_blast": 100, "days": 40, "samples": 3, "repeats": 2, "preview": 100}
TARGETS_MS = {"funnel": 20, "stuck": None, "list": 100, "overview": 100, "preview": 1000}


def scale() -> float | None:
    """BENCH_SCALE from the environment (set by `bench.run --scale`), or None for the usual sizes."""
    value = os.environ.get("BENCH_SCALE", "").strip()
    if not value:
        return None
    try:
        factor = float(value)
    except ValueError:
        factor = 0.0
    common.check(factor > 0, f"BENCH_SCALE={value!r} is not a positive number")
    return factor


def sizes(smoke: bool, factor: float | None) -> dict:
    """SMOKE or FULL, with the blasts multiplied by `factor` (the same days, recipients a blast)."""
    size = dict(SMOKE if smoke else FULL)
    if factor is not None:
        size["blasts"] = max(10, round(size["blasts"] * factor))
    return size


# Where recipients end, cumulative shares in funnel order (a blast with receipts mostly on).
ENDS = (
    (0.005, -30),  # skipped (opted out)
    (0.025, -20),  # failed
    (0.030, -10),  # unknown
    (0.040, 20),  # pending
    (0.120, 30),  # server ack
    (0.470, 40),  # delivered
    (0.870, 50),  # read
    (0.970, 60),  # replied
    (1.000, 70),  # closed
)
TAGS = ("Product Launch", "Raya Promo", "Flash Sale", "New Arrivals", "Clearance", "VIP Preview")
TAGS += ("Restock", "Weekend Deal", "Loyalty", "Webinar")


def seed(blasts: int, per_blast: int, days: int) -> None:
    """Blasts spread evenly over `days`, each with `per_blast` recipients and their history, in bulk SQL."""
    from django.db import connection

    from blasts.models import Blast, BlastRecipient, StatusHistory

    minutes = days * 24 * 60 / blasts
    tags = ", ".join(f"'{tag}'" for tag in TAGS)
    common.insert_select(
        Blast,
        {
            "tag": f"(ARRAY[{tags}])[1 + mod(i, {len(TAGS)})]",
            "follow_up_stage": "CASE WHEN mod(i, 10) < 6 THEN 'Initial' WHEN mod(i, 10) < 9 THEN 'Follow-up 1' ELSE 'Follow-up 2' END",
            "message": "'Hello {first_name}, our new collection is in store this week. Reply to book a fitting.'",
            "device": "'dev-' || mod(i, 3)",
            "state": f"CASE WHEN i > {blasts - 5} THEN 'sending' ELSE 'completed' END",
            "created_at": f"now() - ({blasts} - i) * interval '{minutes} minutes'",
            "started_at": f"now() - ({blasts} - i) * interval '{minutes} minutes' + interval '1 minute'",
            "finished_at": f"CASE WHEN i <= {blasts - 5} THEN now() - ({blasts} - i) * interval '{minutes} minutes' "
            f"+ interval '{per_blast * 3 // 60 + 2} minutes' END",
        },
        "generate_series(1, %s) AS i",
        (blasts,),
    )
    status = "CASE " + " ".join(f"WHEN u < {share} THEN {value}" for share, value in ENDS) + " END"
    # Sends go out every 3 s from the blast's start; each later stage comes a random while later.
    source = f"""(
        SELECT g, k, b.id AS blast_id, sent_at,
            CASE WHEN b.state = 'sending' AND k > {per_blast} * 0.6 THEN 10 ELSE {status} END AS status,
            sent_at + interval '2 seconds' AS server_ack_at,
            sent_at + interval '2 seconds' + v * interval '10 minutes' AS delivered_at,
            sent_at + interval '2 seconds' + v * interval '10 minutes' + w * interval '6 hours' AS read_at,
            sent_at + v * interval '10 minutes' + w * interval '18 hours' AS replied_at,
            sent_at + v * interval '10 minutes' + w * interval '3 days' AS closed_at
        FROM (
            SELECT g, mod(g - 1, {per_blast}) + 1 AS k, (g - 1) / {per_blast} AS n,
                random() AS u, random() AS v, random() AS w
            FROM generate_series(1, %s) AS g
        ) AS r
        JOIN blasts_blast AS b ON b.id = (SELECT min(id) FROM blasts_blast) + r.n
        CROSS JOIN LATERAL (SELECT b.started_at + k * interval '3 seconds' AS sent_at) AS t
    ) AS s"""
    message_id = "'3EB0' || upper(substr(md5(g::text), 1, 18))"

    def stage(at: str, reached: int) -> str:
        return f"CASE WHEN status >= {reached} THEN least({at}, now()) END"

    common.insert_select(
        BlastRecipient,
        {
            "blast_id": "blast_id",
            "phone": "'+6012' || lpad(mod(g::bigint * 7919, 400000)::text, 7, '0')",
            "name": "'Customer ' || mod(g::bigint * 7919, 400000)",
            "message_id": f"CASE WHEN status >= 20 THEN {message_id} END",
            "status": "status",
            "sent_at": stage("sent_at", 20),
            "server_ack_at": stage("server_ack_at", 30),
            "delivered_at": stage("delivered_at", 40),
            "read_at": stage("read_at", 50),
            "replied_at": stage("replied_at", 60),
            "closed_at": stage("closed_at", 70),
            "failed_at": "CASE WHEN status = -20 THEN sent_at END",
            "status_changed_at": "least(CASE status WHEN 30 THEN server_ack_at WHEN 40 THEN delivered_at "
            "WHEN 50 THEN read_at WHEN 60 THEN replied_at WHEN 70 THEN closed_at ELSE sent_at END, now())",
            "failure_reason": "CASE status WHEN -30 THEN 'Opted out' WHEN -20 THEN 'Invalid number: not "
            "registered on WhatsApp' WHEN -10 THEN 'read timed out after 20s' ELSE '' END",
            "send_response": f"""CASE WHEN status >= 20 THEN jsonb_build_object(
                'success', true, 'message', 'Sent Successfully', 'messageId', {message_id},
                'data', jsonb_build_object('status', 'PENDING', 'messageTimestamp', extract(epoch FROM sent_at)::bigint::text,
                    'key', jsonb_build_object('remoteJid', '6012' || g || '@s.whatsapp.net', 'fromMe', true, 'id', {message_id})))
                END""",
            "attempts": "CASE WHEN status = 10 THEN 0 ELSE 1 END",
            "polls": "CASE WHEN status BETWEEN 20 AND 40 THEN 7 ELSE 0 END",
            "reply_text": "CASE WHEN status >= 60 THEN 'Hi, interested' ELSE '' END",
        },
        source,
        (blasts * per_blast,),
    )
    # One history row per step each recipient took, as the ledger writes them.
    steps = """(VALUES
        (10, 15, 'send', coalesce(sent_at, status_changed_at) - interval '1 second', status NOT IN (10, -30), NULL),
        (15, 20, 'send', sent_at, status >= 20, NULL),
        (15, -20, 'send', failed_at, status = -20, NULL),
        (15, -10, 'send', status_changed_at, status = -10, NULL),
        (10, -30, 'send', status_changed_at, status = -30, NULL),
        (20, 30, 'webhook', server_ack_at, status >= 30, 'SERVER_ACK'),
        (30, 40, 'webhook', delivered_at, status >= 40, 'DELIVERY_ACK'),
        (40, 50, 'webhook', read_at, status >= 50, 'READ_ACK'),
        (50, 60, 'webhook', replied_at, status >= 60, NULL),
        (60, 70, 'manual', closed_at, status = 70, NULL)
    ) AS step(from_status, to_status, source, at, taken, ack)"""
    common.insert_select(
        StatusHistory,
        {
            "recipient_id": "r.id",
            "from_status": "step.from_status",
            "to_status": "step.to_status",
            "source": "step.source",
            "occurred_at": "CASE WHEN step.source = 'webhook' THEN step.at END",
            "recorded_at": "step.at",
            "raw": """CASE WHEN step.ack IS NOT NULL THEN jsonb_build_object('status', step.ack,
                'key', jsonb_build_object('id', r.message_id, 'fromMe', true),
                'messageC2STimestamp', extract(epoch FROM step.at)::bigint::text) END""",
        },
        f"blasts_blastrecipient AS r CROSS JOIN LATERAL {steps} WHERE step.taken",
    )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def raw_count(sql: str, params) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM blasts_blastrecipient AS r {sql}", params)
        cursor.fetchone()


def bench(smoke: bool) -> list[common.Row]:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    from blasts.models import Blast, BlastRecipient, StatusHistory
    from blasts.reporting.funnels import blast_funnel
    from blasts.reporting.rollups import rollups_refresh
    from blasts.selectors import blast_stuck

    factor = scale()
    size = sizes(smoke, factor)
    common.say(f"seeding {size['blasts']:,} blasts x {size['per_blast']} recipients, with history")
    start = time.perf_counter()
    seed(size["blasts"], size["per_blast"], size["days"])
    seeded = time.perf_counter() - start
    recipients, history = BlastRecipient.objects.count(), StatusHistory.objects.count()
    common.check(recipients == size["blasts"] * size["per_blast"], f"{recipients} recipients seeded")
    common.say(f"seeded {recipients:,} recipients and {history:,} history rows in {seeded:.0f} s")
    call_command("collectstatic", "--noinput", verbosity=0)  # production serves hashed static names
    # The poller keeps the overview's rollups (reporting/rollups.py) current; here all at once.
    start = time.perf_counter()
    rolled = rollups_refresh(limit=size["blasts"])
    rolling = f"rollups of {rolled:,} settled blasts computed in {time.perf_counter() - start:.1f} s"
    common.say(rolling)

    staff, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(HTTP_HOST="127.0.0.1", HTTP_X_FORWARDED_PROTO="https")
    client.force_login(staff)

    def page(url: str):
        def get():
            response = client.get(url)
            common.check(response.status_code == 200, f"{url} answered {response.status_code}")

        return get

    rows, repeats = [], size["repeats"]
    completed = list(Blast.objects.filter(state=Blast.State.COMPLETED).order_by("?")[: size["samples"]])
    seeding = f"Seeded {recipients:,} recipients and {history:,} history rows in {seeded:.0f} s (bulk SQL)"
    for name, what, selector in (
        ("funnel", "funnel", blast_funnel),
        ("stuck", "stuck breakdown", blast_stuck),
    ):
        selector(completed[0].pk)  # warm
        ms = statistics.median(common.median_ms(partial(selector, blast.pk), 1) for blast in completed)
        count_one = partial(raw_count, "WHERE blast_id = %s")
        ref = statistics.median(common.median_ms(partial(count_one, [blast.pk]), 1) for blast in completed)
        queries = common.count_queries(partial(selector, completed[0].pk))
        notes = (
            f"selector blast_{name}, median over {len(completed)} blasts of {size['per_blast']} recipients"
        )
        rows.append(report(f"4. Reporting: one blast's {what}", ms, ref, queries, name, notes))
    rows[0].notes += f". {seeding}"

    newest = list(Blast.objects.order_by("-created_at", "-id").values_list("pk", flat=True)[:50])
    today = timezone.localdate()
    month = f"date_from={today - timedelta(days=29)}&date_to={today}"
    month_blasts = Blast.objects.filter(created_at__date__gte=today - timedelta(days=29)).count()
    cases = (
        (
            "4. Reporting: list of 50 blasts with metrics (API)",
            "/api/blasts?page_size=50",
            "WHERE blast_id = ANY(%s)",
            [newest],
            "list",
            "GET /api/blasts?page_size=50",
        ),
        (
            "4. Reporting: list page (HTML, 25 a page, totals over all)",
            "/",
            "",
            [],
            "list",
            f"GET / : 25 blasts with mini funnels and totals over all {size['blasts']:,} blasts",
        ),
        (
            "4. Reporting: overview over a month (HTML)",
            f"/overview/?{month}",
            "JOIN blasts_blast AS b ON b.id = r.blast_id WHERE b.created_at >= now() - interval '30 days'",
            [],
            "overview",
            f"GET /overview/ for the last 30 days: {month_blasts} blasts, the 5 sending counted live; {rolling}",
        ),
    )
    for figure, url, sql, params, target, what in cases:
        get = page(url)
        get()  # warm
        ms = common.median_ms(get, repeats)
        ref = common.median_ms(partial(raw_count, sql, params), repeats)
        rows.append(
            report(figure, ms, ref, common.count_queries(get), target, f"{what}; median of {repeats}")
        )
    rows.append(preview_figure(client, size["preview"], repeats))
    if factor is not None:  # the scaled run's own row, first: what seeding that much took
        rows.insert(
            0,
            common.Row(
                f"4. Reporting at {factor:g}x: seeding (bulk SQL, then VACUUM ANALYZE)",
                f"{seeded:.0f} s",
                f"{recipients:,} recipients, {history:,} history rows",
                "—",
                "—",
                None,
                f"{size['blasts']:,} blasts x {size['per_blast']} recipients over {size['days']} days; "
                f"{rolling}",
            ),
        )
    return rows


def preview_figure(client, lines: int, repeats: int) -> common.Row:
    """POST /blasts/new/ with Preview: every line parsed, the texts counted, the bad line listed."""
    from blasts.recipients import parse_recipients, rows_from_text

    text = "\n".join(f"01{2 + i % 8}{i:07d},Name {i}" for i in range(lines)) + "\n12345,Typo\n"
    form = {"tag": "Bench", "follow_up_stage": "Initial", "message": "Salam {first_name|Tuan/Puan}!",
            "device": "bench", "recipients_text": text, "preview": "1"}  # fmt: skip

    def preview():
        response = client.post("/blasts/new/", form)
        common.check(response.status_code == 200 and b"Lines left out" in response.content, "no preview")

    preview()  # warm
    ms = common.median_ms(preview, repeats)
    ref = common.median_ms(lambda: parse_recipients(rows_from_text(text)), repeats)
    limit = TARGETS_MS["preview"]
    return common.Row(
        f"4. New blast: preview of {lines:,} pasted lines (HTML)",
        f"{ms:.1f} ms, {common.count_queries(preview)} queries",
        f"parsing alone {ref:.1f} ms",
        f"{ms / ref:.2f}x",
        f"< {limit} ms",
        ms < limit,
        f"POST /blasts/new/ with Preview, one line not a number; median of {repeats}",
    )


def report(figure: str, ms: float, ref_ms: float, queries: int, target: str, what: str) -> common.Row:
    limit = TARGETS_MS[target]
    return common.Row(
        figure,
        f"{ms:.1f} ms, {queries} queries",
        f"raw count(*) {ref_ms:.1f} ms",
        f"{ms / ref_ms:.2f}x",
        f"< {limit} ms" if limit else "—",
        ms < limit if limit else None,
        what,
    )


if __name__ == "__main__":
    common.main(__doc__, bench)
