"""Production readiness: deploy checks, required secrets, admin path, brute force, CSRF, logs, workers, static."""

import io
import json
import logging
import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from blasts.models import Heartbeat
from blasts.services import worker_heartbeat
from blastsite.logs import JsonFormatter, PlainFormatter, log_event

from .test_settings import GOOD_KEY, ROOT, read_settings

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": GOOD_KEY,
    "ALLOWED_HOSTS": "blasts.example.com",
    "WSAPME_TOKEN": "a-real-looking-wsapme-token-123",
    "WSAPME_WEBHOOK_SECRETS": "a-webhook-secret-456",
    "ADMIN_PATH": "backoffice-7f3k/",
    "HTTPS": None,  # None: removed from the environment, so the production default applies
    "WSAPME_SANDBOX": None,
    "STATIC_MANIFEST": None,
}


def manage(*args, **env):
    clean = {k: v for k, v in os.environ.items() if not (k in env and env[k] is None)}
    clean.update(ENV_FILE="/nonexistent", DJANGO_SETTINGS_MODULE="blastsite.settings")
    clean.update({k: v for k, v in env.items() if v is not None})
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_passes_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    silenced = read_settings("s.SILENCED_SYSTEM_CHECKS", **PRODUCTION)
    assert json.loads(silenced.stdout) == ["security.W021"]  # HSTS preload: the domain owner's call


def test_check_deploy_fails_when_https_is_turned_off():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **{**PRODUCTION, "HTTPS": "false"})
    assert result.returncode != 0
    assert "security.W008" in result.stderr and "security.W012" in result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"WSAPME_TOKEN": None}, "WSAPME_TOKEN must be set when DEBUG is off"),
        ({"ADMIN_PATH": None}, "ADMIN_PATH must be set when DEBUG is off, and not to admin/"),
        ({"ADMIN_PATH": "/admin/"}, "ADMIN_PATH must be set when DEBUG is off, and not to admin/"),
        ({"WSAPME_WEBHOOK_SECRETS": None}, "WSAPME_WEBHOOK_SECRETS must be set when DEBUG is off"),
        ({"SECRET_KEY": None}, "SECRET_KEY must be set"),
    ],
)
def test_production_refuses_to_start_without_its_secrets_and_admin_path(change, message):
    result = read_settings("s.DEBUG", **{**PRODUCTION, **change})
    assert result.returncode != 0 and message in result.stderr
    for secret in (PRODUCTION["WSAPME_TOKEN"], PRODUCTION["WSAPME_WEBHOOK_SECRETS"], GOOD_KEY):
        assert secret not in result.stderr


def test_the_sandbox_may_run_without_a_token_in_production_only_when_asked():
    result = read_settings(
        "s.WSAPME_SANDBOX", **{**PRODUCTION, "WSAPME_TOKEN": None, "WSAPME_SANDBOX": "true"}
    )
    assert json.loads(result.stdout) is True


def test_the_admin_lives_at_the_configured_path(admin_client, settings):
    assert reverse("admin:index") == f"/{settings.ADMIN_PATH}" == "/staff-only/"
    assert admin_client.get("/staff-only/").status_code == 200
    assert admin_client.get("/admin/").status_code == 404


def test_sign_in_is_locked_after_five_wrong_passwords(db):
    get_user_model().objects.create_user("marketer", password="right-password-123", is_staff=True)
    client = Client()
    url = reverse("admin:login")
    for _ in range(4):
        assert client.post(url, {"username": "marketer", "password": "wrong"}).status_code == 200
    assert client.post(url, {"username": "marketer", "password": "wrong"}).status_code == 429  # the 5th
    locked = client.post(url, {"username": "marketer", "password": "right-password-123"})
    assert locked.status_code == 429
    assert "Too many wrong passwords" in locked.content.decode()
    # Another user from the same address is not locked out.
    get_user_model().objects.create_user("boss", password="boss-password-456", is_staff=True)
    assert client.post(url, {"username": "boss", "password": "boss-password-456"}).status_code == 302


def views():
    def walk(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns)
            elif isinstance(pattern, URLPattern):
                yield pattern

    return list(walk(get_resolver().url_patterns))


def test_exactly_one_view_skips_csrf_and_it_is_the_webhook():
    exempt = {p.callback for p in views() if getattr(p.callback, "csrf_exempt", False)}
    plain = {callback for callback in exempt if not hasattr(callback, "cls")}  # DRF views: checked below
    assert {callback.__name__ for callback in plain} == {"wsapme_webhook"}
    # DRF marks its views exempt and checks CSRF itself for session users; tokens are not cookies.
    from rest_framework.authentication import SessionAuthentication, TokenAuthentication

    for callback in exempt - plain:
        assert {type(a) for a in callback.cls().get_authenticators()} <= {
            SessionAuthentication,
            TokenAuthentication,
        }


def test_a_signed_in_api_post_without_the_csrf_token_is_refused(db):
    from .conftest import make_blast

    blast = make_blast(1)
    staff = get_user_model().objects.create_user("staff", password="x-password-123", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    response = client.post(f"/api/blasts/{blast.pk}/send/")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]


def test_the_api_is_for_staff_only(db):
    user = get_user_model().objects.create_user("someone", password="x-password-123")
    client = Client()
    client.force_login(user)
    assert client.get("/api/blasts/").status_code == 403


def record(message, *args, **extra):
    rec = logging.LogRecord("blasts.sending", logging.INFO, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_each_event_is_one_line_with_its_ids_in_json_or_words():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.events")
    logger.addHandler(handler)
    try:
        handler.setFormatter(JsonFormatter())
        log_event(logger, "send", blast=12, recipient=345, outcome="sent")
        handler.setFormatter(PlainFormatter())
        log_event(logger, "poll", blast=12, recipient=345, status="READ_ACK")
    finally:
        logger.removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    assert {k: json.loads(first)[k] for k in ("event", "blast", "recipient", "outcome", "level")} == {
        "event": "send",
        "blast": 12,
        "recipient": 345,
        "outcome": "sent",
        "level": "INFO",
    }
    assert second.endswith("INFO test.events poll blast=12 recipient=345 status=READ_ACK")


def test_no_formatter_ever_writes_a_secret(settings):
    from blastsite import logs

    logs._secrets.cache_clear()
    secret = settings.WSAPME_WEBHOOK_SECRETS[0]
    line = record("Bad Request: /api/webhook/wsapme/%s key=%s", secret, settings.SECRET_KEY)
    for formatter in (PlainFormatter(), JsonFormatter()):
        text = formatter.format(line)
        assert secret not in text and settings.SECRET_KEY not in text and "[redacted]" in text


def test_the_status_page_shows_each_workers_heartbeat_and_the_last_poll(admin_client):
    worker_heartbeat(
        role=Heartbeat.Role.SENDER, name="web-1:4242", note="sent 3, failed 0, unknown 0, skipped 0"
    )
    Heartbeat.objects.filter(pk="web-1:4242").update(seen_at=timezone.now() - timedelta(minutes=10))
    call_command("poll_statuses", "--concurrency", "1", stdout=io.StringIO())
    page = admin_client.get(reverse("status")).content.decode()
    assert "web-1:4242" in page and "10 min ago <strong>(stale)</strong>" in page
    assert "poll_statuses@" in page and "checked 0, updated 0" in page


def test_the_sender_loop_reports_a_heartbeat(db, settings, wsapme_sandbox):
    import threading

    from blasts.gateway.client import get_client
    from blasts.sending.worker import send_due

    settings.WSAPME_BASE_URL = wsapme_sandbox.url
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    send_due(client=get_client(), loop=True, stop=stop)
    beat = Heartbeat.objects.get(role=Heartbeat.Role.SENDER)
    assert timezone.now() - beat.seen_at < timedelta(seconds=5)


def test_gunicorn_accepts_its_configuration():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--check-config",
            "-c",
            "python:blastsite.gunicorn",
            "blastsite.wsgi",
        ],
        cwd=ROOT,
        env={**os.environ, "ENV_FILE": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_collectstatic_and_whitenoise_serve_hashed_files_cached_for_a_year(tmp_path):
    env = {**PRODUCTION, "STATIC_ROOT": str(tmp_path), "HTTPS": "false"}
    assert manage("collectstatic", "--noinput", "-v0", **env).returncode == 0
    assert (tmp_path / "staticfiles.json").is_file()
    script = (
        "import django; django.setup(); from django.test import Client; "
        "from django.templatetags.static import static; url = static('blasts/app.css'); "
        "r = Client().get(url); print(url, r.status_code, r.headers['Cache-Control'])"
    )
    clean = {k: v for k, v in os.environ.items() if k not in env or env[k] is not None}
    clean.update({k: v for k, v in env.items() if v is not None}, ENV_FILE="/nonexistent")
    clean.update(DJANGO_SETTINGS_MODULE="blastsite.settings")
    clean.pop("DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=clean, capture_output=True, text=True)
    url, status, cache = out.stdout.split(maxsplit=2)
    assert url.startswith("/static/blasts/app.") and url != "/static/blasts/app.css"  # hashed name
    assert (status, cache.strip()) == ("200", "max-age=315360000, public, immutable")


def test_the_applier_loop_reports_a_heartbeat(db):
    import threading

    from blasts.tracking.applier import Waker, applier_loop

    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    applier_loop(stop=stop, waker=Waker(0.05), limit=10, name="applier-test", forever=True)
    beat = Heartbeat.objects.get(role=Heartbeat.Role.APPLIER)
    assert beat.pk == "applier-test" and timezone.now() - beat.seen_at < timedelta(seconds=5)


def processes(procfile: str) -> dict[str, str]:
    lines = (ROOT / procfile).read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def test_make_run_production_and_systemd_run_the_same_processes():
    dev = processes("Procfile.dev")
    run = re.search(
        r"print\('([a-z ]+)' if settings.WSAPME_SANDBOX else '([a-z ]+)'\)", (ROOT / "Makefile").read_text()
    )
    assert run.group(1).split() == list(dev)  # make run starts every process in Procfile.dev
    assert run.group(2).split() == [name for name in dev if name != "sandbox"]
    # serve_links is optional and needs PostgreSQL: make run (SQLite) has the web answer /l/ itself.
    production = [name for name in processes("Procfile") if name not in ("release", "links")]
    assert production == run.group(2).split() == ["web", "worker", "poller", "applier"]
    units = sorted(path.name for path in (ROOT / "blastsite" / "deploy").glob("*.service"))
    assert units == sorted(f"blasts-{name}.service" for name in [*production, "links"])
    assert processes("Procfile")["links"].startswith("python manage.py serve_links --bind 127.0.0.1:")
    for name in ("worker", "poller", "applier"):
        command = dev[name].removeprefix("python ")
        assert processes("Procfile")[name] == dev[name]
        assert (
            f"ExecStart=/srv/blasts/.venv/bin/python {command}\n"
            in (ROOT / "blastsite" / "deploy" / f"blasts-{name}.service").read_text()
        )
