"""Rules no test pinned before (issue 16): each of these failed to fail when the rule was broken."""

import ast
import hmac
import inspect
import random
from pathlib import Path
from unittest import mock

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from blasts import selectors
from blasts.lifecycle import blast_move, blast_queue
from blasts.models import Blast, BlastRecipient, Device, StatusHistory
from blasts.reporting import clicks, compare, funnels, timing, variants
from blasts.reporting.funnels import blasts_daily
from blasts.sending.ledger import _backoff
from blasts.services import recipient_advance
from blasts.statuses import BLAST_MOVES, OPEN
from blasts.tracking import unmatched

from .conftest import apply_events, make_blast

Status = BlastRecipient.Status


def at(blast: Blast, *statuses: Status) -> list[BlastRecipient]:
    """The blast's first recipients moved (sent first) to `statuses`, in order; the rest stay queued."""
    recipients = list(blast.recipients.order_by("id"))
    for recipient, status in zip(recipients, statuses, strict=False):
        recipient_advance(recipient=recipient, status=Status.PENDING, source=StatusHistory.Source.SEND)
        if status != Status.PENDING:
            recipient_advance(recipient=recipient, status=status, source=StatusHistory.Source.WEBHOOK)
    return recipients


def test_server_ack_is_not_received_in_the_recipients_filter(admin_client):
    blast = make_blast(3)
    _, delivered, read = at(blast, Status.SERVER_ACK, Status.DELIVERY_ACK, Status.READ_ACK)
    url = reverse("api:blast-recipients", args=[blast.pk])

    phones = {r["phone"] for r in admin_client.get(url, {"stage": "received"}).json()["results"]}

    assert phones == {delivered.phone, read.phone}


def test_server_ack_is_not_received_in_the_daily_trend(db):
    blast = make_blast(3)
    at(blast, Status.SERVER_ACK, Status.DELIVERY_ACK, Status.READ_ACK)

    (day,) = blasts_daily(Blast.objects.filter(pk=blast.pk))

    assert (day["sent"], day["received"], day["read"]) == (3, 2, 1)


def test_a_later_reply_keeps_the_first_replys_words(db):
    recipient = make_blast(1).recipients.get()
    at(recipient.blast, Status.PENDING)
    jid = recipient.phone.lstrip("+") + "@c.us"
    for text in ("First answer", "Second answer"):
        body = {"type": "text", "from": jid, "message": text}
        Client().post("/api/webhook/wsapme", body, content_type="application/json",
                      headers={"X-Webhook-Token": "test-webhook-secret"})  # fmt: skip
        assert apply_events() == ["applied" if text == "First answer" else "no_change"]
    recipient.refresh_from_db()
    assert (recipient.status, recipient.reply_text) == (Status.REPLIED, "First answer")


@pytest.mark.parametrize("attempts", [1, 3, 8])
def test_the_backoff_never_comes_before_the_gateways_retry_after(settings, attempts):
    settings.SEND_BACKOFF_CAP_SECONDS = 300
    rng = random.Random(7)
    assert all(_backoff(attempts, 600.0, rng) >= 600.0 for _ in range(50))
    assert all(_backoff(attempts, None, rng) <= 450.0 for _ in range(50))  # capped, with jitter


def test_the_webhook_secret_is_compared_in_constant_time_with_every_live_secret(db):
    with mock.patch("blasts.webhooks.hmac.compare_digest", wraps=hmac.compare_digest) as compare:
        response = Client().post("/api/webhook/wsapme", {}, content_type="application/json",
                                 headers={"X-Webhook-Token": "test-webhook-secret-next"})  # fmt: skip
    assert response.status_code == 200
    assert compare.call_count == 2  # both live secrets, no early exit


# --- reads never write ----------------------------------------------------------------------------

WRITES = ("INSERT", "UPDATE", "DELETE")


def _refuse_writes(execute, sql, params, many, context):
    assert not sql.lstrip().upper().startswith(WRITES), f"a read wrote: {sql[:120]}"
    return execute(sql, params, many, context)


def _selector_calls(blast: Blast, recipient: BlastRecipient) -> dict:
    """Every public read with arguments that reach its queries."""
    blasts = Blast.objects.filter(pk=blast.pk)
    funnel = funnels.blast_funnel(blast.pk)
    return {
        funnels.audience: lambda: list(funnels.audience(blast=blast)),
        funnels.blast_funnels: lambda: funnels.blast_funnels([blast.pk]),
        funnels.blast_funnel: lambda: funnels.blast_funnel(blast.pk),
        funnels.blast_variant_funnels: lambda: funnels.blast_variant_funnels(blast.pk, "AB"),
        clicks.blast_clicks: lambda: clicks.blast_clicks(blast.pk, by_variant=True),
        clicks.blasts_clicks: lambda: clicks.blasts_clicks([blast.pk]),
        clicks.blast_tracks_links: lambda: clicks.blast_tracks_links(blast),
        variants.blast_variants: lambda: variants.blast_variants(blast),
        variants.blast_variant_test: lambda: variants.blast_variant_test(blast),
        selectors.blast_eta: lambda: selectors.blast_eta(blast),
        selectors.blast_stuck: lambda: selectors.blast_stuck(blast.pk),
        funnels.blasts_funnel_breakdown: lambda: funnels.blasts_funnel_breakdown(blasts),
        funnels.blasts_funnel_total: lambda: funnels.blasts_funnel_total(blasts),
        funnels.blasts_daily: lambda: funnels.blasts_daily(blasts),
        funnels.blasts_status_counts: lambda: funnels.blasts_status_counts(blasts),
        selectors.blast_progress: lambda: selectors.blast_progress(blast),
        selectors.blast_canaries: lambda: selectors.blast_canaries(blast.pk),
        timing.blast_timings: lambda: timing.blast_timings([blast.pk]),
        timing.blasts_timings_by_stage: lambda: timing.blasts_timings_by_stage(blasts),
        timing.blasts_timings_by: lambda: timing.blasts_timings_by(blast.recipients.all(), "blast__tag"),
        timing.blast_reply_curve: lambda: timing.blast_reply_curve([blast.pk]),
        timing.blast_read_split: lambda: timing.blast_read_split(blast.pk),
        compare.funnels_compare: lambda: compare.funnels_compare(funnel, funnel),
        compare.comparable_funnel: lambda: compare.comparable_funnel(f"blast:{blast.pk}"),
        compare.comparable_choices: lambda: compare.comparable_choices(),
        compare.blast_sequence: lambda: compare.blast_sequence(blast),
        selectors.workers_status: lambda: selectors.workers_status(),
        selectors.webhook_backlog: lambda: selectors.webhook_backlog(),
        selectors.health_report: lambda: selectors.health_report(),
        selectors.blast_filter_choices: lambda: selectors.blast_filter_choices(),
        selectors.tags_like: lambda: selectors.tags_like("launch"),
        unmatched.blast_unmatched: lambda: unmatched.blast_unmatched(blast),
        unmatched.recipient_send_started: lambda: unmatched.recipient_send_started(recipient),
        unmatched.recipient_match_choices: lambda: unmatched.recipient_match_choices(recipient),
    }


def test_no_read_writes_to_the_database(db):
    """Every public function of the read modules runs with writes refused; a new one must be added here."""
    blast = make_blast(
        5, device="device-with-no-row-yet", variants=["B"]
    )  # one left to send: the ETA reads pacing
    blast_queue(blast=blast)
    recipient, *_ = at(blast, Status.READ_ACK, Status.DELIVERY_ACK, Status.PENDING, Status.REPLIED)
    calls = _selector_calls(blast, recipient)
    public = {
        function
        for module in (selectors, funnels, timing, compare, unmatched, clicks, variants)
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if function.__module__ == module.__name__ and not name.startswith("_")
    }
    assert public == set(calls), "add the new read to _selector_calls"
    with connection.execute_wrapper(_refuse_writes):
        for call in calls.values():
            call()
    assert not Device.objects.exists()  # the ETA read the device's pacing without making its row


# --- one thread helper ----------------------------------------------------------------------------


def test_work_in_threads_returns_each_result_and_raises_what_a_thread_raised():
    from blasts.threads import run_in_threads

    assert run_in_threads(lambda: 7, 3) == [7, 7, 7]
    calls = iter(range(3))

    def fails_once():
        if next(calls) == 1:
            raise RuntimeError("lost the gateway")
        return "done"

    with pytest.raises(RuntimeError, match="lost the gateway"):
        run_in_threads(fails_once, 3)


# --- the blast's states ---------------------------------------------------------------------------


def test_every_blast_state_has_its_moves_and_the_groups_derive_from_them():
    assert set(BLAST_MOVES) == set(Blast.State)
    assert not BLAST_MOVES[Blast.State.CANCELLED]  # the only end with no way back
    assert set(OPEN) == {
        state for state in Blast.State if state not in (Blast.State.COMPLETED, Blast.State.CANCELLED)
    }


def test_a_move_the_rule_does_not_have_is_a_programming_error(db):
    blast = make_blast(1)
    with pytest.raises(ValueError, match="no blast moves"):
        blast_move(
            blast=blast, to=Blast.State.SENDING, allowed_from=[Blast.State.DRAFT], verb="started", did=None
        )
    blast.refresh_from_db()
    assert blast.state == Blast.State.DRAFT


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("pause", "Only a queued or sending blast can be paused; this one is draft."),
        ("resume", "Only a paused blast can be resumed; this one is draft."),
    ],
)
def test_the_pages_the_api_and_the_admin_refuse_a_move_in_the_same_words(admin_client, action, message):
    blast = make_blast(1)
    page = admin_client.post(reverse("blast-action", args=[blast.pk, action]), follow=True)
    api = admin_client.post(reverse(f"api:blast-{action}", args=[blast.pk]))
    admin = admin_client.post(
        reverse("admin:blasts_blast_changelist"),
        {"action": action, "_selected_action": [blast.pk]},
        follow=True,
    )
    assert message in [str(m) for m in page.context["messages"]]
    assert (api.status_code, api.json()) == (409, {"detail": message})
    assert f"{blast}: {message}" in [str(m) for m in admin.context["messages"]]
    blast.refresh_from_db()
    assert blast.state == Blast.State.DRAFT


# --- the layout: imports run one way ------------------------------------------------------------

APP = Path(__file__).resolve().parents[1]
INTERFACES = (
    "views",
    "actions",
    "api",
    "admin",
    "forms",
    "filters",
    "serializers",
    "urls",
    "webhooks",
    "management",
    "server",  # tracking.link_server: the redirect's server of its own
)
CORE = ("models", "statuses", "recipients", "text", "threads", "templatetags", "gateway.client")


def _layer(module: str) -> str:
    """'interface', 'core' or 'logic' (services, selectors and the capability sub-packages)."""
    name = module.removeprefix("blasts.")
    # contacts.views and contacts.import_views are interfaces too
    if any(part.startswith(INTERFACES) or part.endswith(INTERFACES) for part in name.split(".")):
        return "interface"
    return "core" if name.startswith(CORE) else "logic"


def _imports(path: Path) -> set[str]:
    """The blasts modules a file imports, as absolute names."""
    package = ["blasts", *path.relative_to(APP).parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found |= {module} if node.module else {f"{module}.{alias.name}" for alias in node.names}
    return {module for module in found if module.startswith("blasts.")}


def test_imports_run_from_the_interfaces_down_to_the_models_never_up():
    upward = []
    for path in APP.rglob("*.py"):
        if {"tests", "migrations"} & set(path.relative_to(APP).parts):
            continue
        module = ".".join(["blasts", *path.relative_to(APP).with_suffix("").parts])
        rank = {"core": 0, "logic": 1, "interface": 2}
        for imported in _imports(path):
            if rank[_layer(imported)] > rank[_layer(module)]:
                upward.append(f"{module} imports {imported}")
    assert upward == []


def test_no_module_outgrows_a_reading():
    """The layout keeps modules small enough to read at one sitting (models and tests excepted)."""
    long = {
        str(path.relative_to(APP)): lines
        for path in APP.rglob("*.py")
        if "tests" not in path.parts and path.name != "models.py" and "migrations" not in path.parts
        and (lines := len(path.read_text().splitlines())) > 420
    }  # fmt: skip
    assert long == {}
