"""Alerts: tell people when a blast needs one (it paused itself), is done, a worker went quiet, or
webhook events wait too long to be applied.

Each event raises one alert (its key is unique), delivered after the transaction commits, in a
thread of its own: by email to the blast's creator and ALERT_EMAILS, and as a JSON POST of
{"text": ...} (what Slack and Google Chat incoming webhooks take) to ALERT_WEBHOOK_URL. Delivery
never blocks or fails a send; what failed is kept on the alert and shown on the Status page.
"""

import logging
import threading
from datetime import datetime

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from .models import Alert, Blast, Heartbeat
from .selectors import STALE_AFTER, webhook_backlog
from .text import fit

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT = (3.0, 5.0)  # connect, read: seconds


def alert_raise(*, kind: Alert.Kind, text: str, blast: Blast | None = None, key: str = "") -> Alert | None:
    """Record an alert unless one with its key was raised already; deliver it once this commits.

    The key defaults to the kind, the blast and the blast's state-change time: one per event.
    """
    key = key or f"{kind}:{blast.pk}:{timezone.now().isoformat()}"
    try:
        with transaction.atomic():
            alert = Alert.objects.create(key=fit(Alert, "key", key), kind=kind, blast=blast, text=text)
    except IntegrityError:
        return None  # raised before: each event alerts once
    transaction.on_commit(lambda: deliver_in_background(alert.pk))
    return alert


def deliver_in_background(alert_id: int) -> None:
    def deliver():
        try:
            alert_deliver(alert_id)
        finally:
            connection.close()  # the thread's own connection

    threading.Thread(target=deliver, name=f"alert-{alert_id}", daemon=True).start()


def _addresses(alert: Alert) -> list[str]:
    creator = alert.blast.created_by if alert.blast and alert.blast.created_by else None
    return list(
        dict.fromkeys([*([creator.email] if creator and creator.email else []), *settings.ALERT_EMAILS])
    )


def alert_deliver(alert_id: int) -> None:
    """Send one alert by email and webhook; record when it went out, or why it did not."""
    try:
        alert = Alert.objects.select_related("blast__created_by").get(pk=alert_id)
        subject, errors = alert.text.splitlines()[0][:150], []
        if addresses := _addresses(alert):
            try:
                send_mail(f"[WhatsApp blasts] {subject}", alert.text, None, addresses)
            except Exception as exc:  # any backend's failure: recorded, never raised into a sender
                errors.append(f"email: {type(exc).__name__}")
        if settings.ALERT_WEBHOOK_URL:
            # The URL is a secret (it holds the webhook's token): errors name the failure, never the URL.
            try:
                answer = requests.post(
                    settings.ALERT_WEBHOOK_URL, json={"text": alert.text}, timeout=WEBHOOK_TIMEOUT
                )
            except requests.RequestException as exc:
                errors.append(f"webhook: {type(exc).__name__}")
            else:
                errors += [f"webhook: HTTP {answer.status_code}"] if answer.status_code >= 300 else []
        Alert.objects.filter(pk=alert_id).update(
            delivered_at=None if errors else timezone.now(), error=fit(Alert, "error", "; ".join(errors))
        )
        if errors:
            log.warning("alert %s not delivered: %s", alert_id, "; ".join(errors))
    except Exception:
        log.exception("alert %s not delivered", alert_id)


def workers_alert_quiet(*, now: datetime) -> int:
    """When no worker of a role has been heard from lately (its newest heartbeat is stale), alert once
    for that silence. Senders watch the poller and the poller watches the senders."""
    raised = 0
    for newest in Heartbeat.objects.values("role").annotate(seen_at=Max("seen_at")):  # one query a tick
        role, seen_at = Heartbeat.Role(newest["role"]), newest["seen_at"]
        if now - seen_at <= STALE_AFTER[role]:
            continue
        minutes = int((now - seen_at).total_seconds() // 60)
        text = f"No {role.label.lower()} has been heard from for {minutes} minutes: is it running?"
        key = f"{Alert.Kind.WORKER_QUIET}:{role}:{seen_at.isoformat()}"
        raised += alert_raise(kind=Alert.Kind.WORKER_QUIET, text=text, key=key) is not None
    return raised


def webhook_backlog_alert(*, now: datetime) -> bool:
    """When the oldest unapplied webhook event has waited longer than BACKLOG_ALERT_AFTER, alert once.

    An alert raised after that event arrived already told of it: one alert while the same events wait
    (a stopped applier), a new one only once everything late then has been applied and events are late
    again (an applier that cannot keep up says so at most every few minutes, not every tick).
    """
    backlog = webhook_backlog(now)
    if not backlog.alert:
        return False
    if Alert.objects.filter(kind=Alert.Kind.BACKLOG, created_at__gt=backlog.oldest_at).exists():
        return False
    minutes = int(backlog.oldest_age.total_seconds() // 60)
    events = f"{backlog.count} webhook event{'s' if backlog.count != 1 else ''}"
    text = (
        f"{events} waiting to be applied, the oldest received {minutes} minutes ago: delivery and read "
        "counts and replies are not updating. Is apply_events running (manage.py apply_events --loop)? "
        "See the Status page."
    )
    key = f"{Alert.Kind.BACKLOG}:{backlog.oldest_at.isoformat()}"
    return alert_raise(kind=Alert.Kind.BACKLOG, text=text, key=key) is not None
