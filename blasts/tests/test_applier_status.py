"""The applier watched: the Status page and /healthz?deep=1 show the webhook backlog (how many events wait
to be applied and how old the oldest is) and the applier's heartbeat; a backlog older than 5 minutes is
flagged, makes the deep check 503 and raises one alert."""

import importlib.util
import io
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from blasts.alerts import webhook_backlog_alert
from blasts.gateway.client import get_client
from blasts.models import Alert, Heartbeat, WebhookEvent
from blasts.selectors import BACKLOG_ALERT_AFTER, Backlog, webhook_backlog
from blasts.sending.worker import send_due

State = WebhookEvent.State


def event(ago: timedelta, state: str = State.RECEIVED, now=None) -> WebhookEvent:
    return WebhookEvent.objects.create(
        received_at=(now or timezone.now()) - ago, state=state, body={"id": "x", "status": "delivered"}
    )


def applier_beat(
    name: str, ago: timedelta, note: str = "Applied 40 events: 38 applied, 2 no change."
) -> None:
    now = timezone.now()
    Heartbeat.objects.create(
        name=name,
        role=Heartbeat.Role.APPLIER,
        seen_at=now - ago,
        started_at=now - timedelta(hours=2),
        note=note,
    )


# --- the selector --------------------------------------------------------------------------------------------


def test_the_backlog_counts_unapplied_events_and_ages_the_oldest_in_one_query(db, django_assert_num_queries):
    now = timezone.now()
    oldest = event(timedelta(minutes=7), now=now)
    event(timedelta(seconds=30), now=now)
    event(timedelta(hours=1), state=State.APPLIED, now=now)  # applied: not waiting, however old
    event(timedelta(hours=2), state=State.WAITING, now=now)  # applied, waits for its send: not the applier's
    with django_assert_num_queries(1):
        backlog = webhook_backlog(now)
    assert backlog == Backlog(count=2, oldest_at=oldest.received_at, oldest_age=timedelta(minutes=7))
    assert backlog.alert


def test_no_backlog_is_a_zero_count_and_no_age(db):
    event(timedelta(hours=1), state=State.APPLIED)
    backlog = webhook_backlog()
    assert backlog == Backlog(count=0, oldest_at=None, oldest_age=None) and not backlog.alert


def test_the_backlog_is_an_alert_only_past_five_minutes(db):
    now = timezone.now()
    event(BACKLOG_ALERT_AFTER - timedelta(seconds=1), now=now)
    assert timedelta(minutes=5) == BACKLOG_ALERT_AFTER
    assert not webhook_backlog(now).alert
    assert webhook_backlog(now + timedelta(seconds=2)).alert


@pytest.mark.postgres
def test_the_backlog_query_reads_an_index_not_the_whole_table(db):
    """Applied events are kept for months: finding the few unapplied ones must not scan them all."""
    WebhookEvent.objects.bulk_create(
        WebhookEvent(state=State.APPLIED, received_at=timezone.now() - timedelta(days=1)) for _ in range(5000)
    )
    event(timedelta(minutes=1))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE blasts_webhookevent")
    with CaptureQueriesContext(connection) as query:
        webhook_backlog()
    [sql] = [q["sql"] for q in query.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan and "Index" in plan, plan


# --- the Status page -----------------------------------------------------------------------------------------


def status_page(client) -> str:
    return client.get(reverse("status")).content.decode()


def test_the_status_page_shows_the_backlog_and_the_appliers_heartbeat(admin_client):
    event(timedelta(minutes=2))
    event(timedelta(seconds=10))
    applier_beat("web-1:777", timedelta(seconds=70))
    page = status_page(admin_client)
    assert "<h2>Webhook events</h2>" in page
    assert '<p id="backlog">2 events waiting to be applied, the oldest received 2 min ago.</p>' in page
    assert (
        "web-1:777" in page and "1 min ago" in page and "Applied 40 events: 38 applied, 2 no change." in page
    )
    assert "What it applied since it started" in page  # the note's head says what the note is
    assert "(stale)" not in page and "No applier" not in page


def test_an_old_backlog_and_a_quiet_applier_are_flagged_like_a_stale_worker(admin_client):
    event(timedelta(minutes=6))
    applier_beat("web-1:777", timedelta(minutes=3))
    page = status_page(admin_client)
    assert re.search(
        r'<p class="warning" id="backlog">1 event waiting to be applied, the oldest received 6 min ago '
        r"<strong>\(over 5 min: [^<]+\)</strong>\.</p>",
        page,
    ), page
    assert "3 min ago <strong>(stale)</strong>" in page
    assert "No applier has been seen for 3 min" in page


def test_no_backlog_and_no_applier_say_so(admin_client):
    event(timedelta(hours=1), state=State.APPLIED)
    page = status_page(admin_client)
    assert '<p id="backlog">No events waiting to be applied.</p>' in page
    assert "No applier has ever reported" in page and "apply_events --loop" in page


def test_the_status_page_makes_a_fixed_number_of_queries(admin_client, django_assert_num_queries):
    """Session, user, heartbeats, blasts waiting, the backlog, alerts: however many workers and events."""
    for n in range(3):
        applier_beat(f"web-{n}:1", timedelta(seconds=n))
        event(timedelta(minutes=n))
    Heartbeat.objects.create(name="web-1:2", role=Heartbeat.Role.SENDER)
    admin_client.get(reverse("status"))  # the session is warm
    with django_assert_num_queries(6):
        assert admin_client.get(reverse("status")).status_code == 200


# --- /healthz ------------------------------------------------------------------------------------------------


def test_the_deep_health_check_reports_the_backlog_and_each_workers_heartbeat(db, client):
    event(timedelta(seconds=90))
    event(timedelta(seconds=5))
    applier_beat("web-1:777", timedelta(seconds=4))
    Heartbeat.objects.create(
        name="poll@web-1", role=Heartbeat.Role.POLLER, seen_at=timezone.now() - timedelta(hours=1)
    )
    response = client.get("/healthz?deep=1")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "status": "ok",
        "database": "ok",
        "workers": {
            "sender": None,  # none seen this week
            "poller": {"seen_seconds_ago": body["workers"]["poller"]["seen_seconds_ago"], "stale": True},
            "applier": {"seen_seconds_ago": body["workers"]["applier"]["seen_seconds_ago"], "stale": False},
        },
        "backlog": {
            "count": 2,
            "oldest_age_seconds": body["backlog"]["oldest_age_seconds"],
            "alert_after_seconds": 300,
            "alert": False,
        },
    }
    assert 3600 <= body["workers"]["poller"]["seen_seconds_ago"] < 3610
    assert 4 <= body["workers"]["applier"]["seen_seconds_ago"] < 10
    assert 90 <= body["backlog"]["oldest_age_seconds"] < 100
    assert "web-1" not in response.content.decode()  # host names stay behind the Status page's login


def test_the_deep_health_check_is_503_when_the_backlog_is_older_than_five_minutes(db, client):
    event(timedelta(minutes=5, seconds=10))
    applier_beat("web-1:777", timedelta(seconds=4))
    response = client.get("/healthz?deep=1")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["backlog"]["alert"] is True and response.json()["backlog"]["count"] == 1
    plain = client.get("/healthz")  # the load balancer's check: the database only
    assert (plain.status_code, plain.json()) == (200, {"status": "ok", "database": "ok"})


def test_the_plain_health_check_stays_one_query(db, client, django_assert_num_queries):
    event(timedelta(minutes=10))
    with django_assert_num_queries(1):
        assert client.get("/healthz").status_code == 200
    with CaptureQueriesContext(connection) as deep:
        client.get("/healthz?deep=1")
    assert len(deep.captured_queries) == 3  # SELECT 1, the heartbeats, the backlog


# --- the alert -----------------------------------------------------------------------------------------------


def test_an_old_backlog_alerts_once_and_a_young_one_not_at_all(db, settings, mailoutbox):
    settings.ALERT_EMAILS = ["ops@example.com"]
    now = timezone.now()
    event(timedelta(minutes=4, seconds=50), now=now)
    assert webhook_backlog_alert(now=now) is False  # under 5 minutes: the applier is just busy
    assert not Alert.objects.exists()

    later = now + timedelta(minutes=2)  # the same event, now 6 min 50 s old
    event(timedelta(seconds=1), now=later)
    assert webhook_backlog_alert(now=later) is True
    assert webhook_backlog_alert(now=later + timedelta(seconds=5)) is False  # the next tick: the same wait
    event(timedelta(seconds=0), now=later)  # more arriving does not make it a new episode
    assert webhook_backlog_alert(now=later + timedelta(minutes=3)) is False
    alert = Alert.objects.get()
    assert alert.kind == Alert.Kind.BACKLOG
    assert alert.text.startswith("2 webhook events waiting to be applied, the oldest received 6 minutes ago")
    assert "Is apply_events running" in alert.text and "Status page" in alert.text


def test_an_applier_working_through_a_late_backlog_does_not_alert_each_tick(db):
    now = timezone.now()
    first = event(timedelta(minutes=9), now=now)
    event(timedelta(minutes=8), now=now)  # already waiting when the alert went out
    assert webhook_backlog_alert(now=now) is True
    WebhookEvent.objects.filter(pk=first.pk).update(state=State.APPLIED)  # the head moves, still late
    assert webhook_backlog(now).alert
    assert webhook_backlog_alert(now=now + timedelta(seconds=5)) is False
    assert Alert.objects.count() == 1


def test_after_the_backlog_is_applied_a_new_wait_alerts_again(db):
    now = timezone.now()
    event(timedelta(minutes=6), now=now)
    assert webhook_backlog_alert(now=now) is True
    WebhookEvent.objects.update(state=State.APPLIED)  # the applier came back and caught up …
    assert webhook_backlog_alert(now=now) is False
    event(timedelta(seconds=0), now=timezone.now() + timedelta(seconds=1))  # … and stopped again
    assert webhook_backlog_alert(now=timezone.now() + timedelta(minutes=7)) is True
    assert Alert.objects.filter(kind=Alert.Kind.BACKLOG).count() == 2


def test_the_sender_and_the_poller_both_watch_the_backlog(db, settings):
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX = "", True
    event(timedelta(minutes=8))
    send_due(client=get_client())  # one pass of the sender (its housekeeping runs first)
    assert Alert.objects.filter(kind=Alert.Kind.BACKLOG).count() == 1
    Alert.objects.all().delete()
    call_command("poll_statuses", "--concurrency", "1", stdout=io.StringIO())
    assert Alert.objects.filter(kind=Alert.Kind.BACKLOG).count() == 1


# --- in a browser --------------------------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.mark.skipif(
    not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None,
    reason="needs Debian's Chromium at /usr/bin/chromium and the playwright package",
)
@pytest.mark.django_db(transaction=True)
def test_the_backlog_fits_and_is_labelled_at_desktop_and_phone_width(
    live_server, django_user_model, monkeypatch
):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop runs in this thread
    django_user_model.objects.create_superuser("operator", "", "pw-status-7f3k")
    for minutes in (9, 4, 1):
        event(timedelta(minutes=minutes))
    applier_beat("blasts-applier-1.internal.example.com:48213", timedelta(minutes=3))
    applier_beat("blasts-applier-2.internal.example.com:48214", timedelta(seconds=3))
    Heartbeat.objects.create(
        name="web-1:4242", role=Heartbeat.Role.SENDER, note="sent 3, failed 0, unknown 0"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for name, viewport in (("desktop", (1366, 900)), ("phone", (390, 844))):
                context = browser.new_context(
                    viewport={"width": viewport[0], "height": viewport[1]}, is_mobile=name == "phone"
                )
                page = context.new_page()
                page.goto(f"{live_server.url}/login/?next=/status/")
                page.fill("#id_username", "operator")
                page.fill("#id_password", "pw-status-7f3k")
                page.get_by_role("button", name="Sign in").click()
                expect(page.get_by_role("heading", level=1, name="Status")).to_be_visible()
                expect(page.locator("#backlog")).to_contain_text(
                    "3 events waiting to be applied, the oldest received 9 min ago"
                )
                page.screenshot(path=ARTIFACTS / f"status-backlog-{name}.png", full_page=True)
                scroll, client, inner = page.evaluate(
                    "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
                    " window.innerWidth]"
                )
                assert scroll <= client + 1 and inner == viewport[0], (name, scroll, client, inner)
                if name == "phone":  # the table's heads are hidden: each cell says what it is
                    cells = page.locator("table.heartbeats tbody td")
                    labels = cells.evaluate_all(
                        "tds => tds.map(td => getComputedStyle(td, '::before').content)"
                    )
                    assert labels and all(label not in ("none", "normal", "") for label in labels), labels
                context.close()
        finally:
            browser.close()
    assert os.path.getsize(ARTIFACTS / "status-backlog-phone.png") > 0
