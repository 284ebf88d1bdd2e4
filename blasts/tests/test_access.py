"""Team access (issue 17): who may do what, the same in the pages, the API and the admin, and the
audit row every change leaves. The expected table is kept here, by hand: a change to a role shows
up as a difference from it."""

import io
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from blasts.lifecycle import blast_complete, blast_pause, blast_queue, blast_start
from blasts.models import AuditRecord, Blast, BlastRecipient, Device, OptOut, StatusHistory, WebhookEvent
from blasts.services import recipient_advance

from .conftest import make_blast

Status = BlastRecipient.Status
Did = AuditRecord.Action
ROLES = ["anonymous", "staff", "viewer", "marketer", "admin", "superuser"]
STAFF = {"staff", "viewer", "marketer", "admin", "superuser"}
VIEWERS = STAFF - {"staff"}  # the admin's lists need view permissions; staff with no group has none
MARKETERS = {"marketer", "admin", "superuser"}
ADMINS = {"admin", "superuser"}
ADMIN_PATH = "/staff-only/"


def login(role: str) -> tuple[Client, User | None]:
    client = Client()
    if role == "anonymous":
        return client, None
    user = User.objects.create_user(role, f"{role}@example.com", is_staff=True)  # force_login: no hashing
    if role == "superuser":
        user.is_superuser = True
        user.save()
    elif role != "staff":
        user.groups.add(Group.objects.get(name=role.title()))
    client.force_login(user)
    return client, user


@dataclass
class World:
    draft: Blast
    sending: Blast
    paused: Blast
    done: Blast  # completed, one recipient's outcome unknown (with an ack waiting for a match)
    read: BlastRecipient  # a recipient of `sending` that read the message
    unknown: BlastRecipient


def world() -> World:
    draft = make_blast(2, tag="Draft")
    sending, paused, done = (
        make_blast(2, tag="Sending"),
        make_blast(2, tag="Paused"),
        make_blast(2, tag="Done"),
    )
    for blast in (sending, paused, done):
        blast_queue(blast=blast)
        blast_start(blast=blast)
    blast_pause(blast=paused)
    read, pending = sending.recipients.order_by("id")
    recipient_advance(recipient=read, status=Status.READ_ACK, source=StatusHistory.Source.SEND)
    recipient_advance(recipient=pending, status=Status.PENDING, source=StatusHistory.Source.SEND,
                      also={"message_id": "MSG-PENDING"})  # fmt: skip
    unknown, other = done.recipients.order_by("id")
    for status in (Status.SENDING, Status.UNKNOWN):
        recipient_advance(recipient=unknown, status=status, source=StatusHistory.Source.SEND)
    recipient_advance(recipient=other, status=Status.PENDING, source=StatusHistory.Source.SEND,
                      also={"message_id": "MSG-OTHER"})  # fmt: skip
    blast_complete(blast=done)
    WebhookEvent.objects.create(kind=WebhookEvent.Kind.STATUS, state=WebhookEvent.State.WAITING,
                                message_id="MSG-LOST", status="DELIVERY_ACK", body={})  # fmt: skip
    AuditRecord.objects.all().delete()  # what the setup did is not the case under test
    return World(draft, sending, paused, done, read, unknown)


def state(blast: Blast) -> str:
    return Blast.objects.get(pk=blast.pk).state


# --- reads: (name, allowed roles, path) -------------------------------------------------------------

READS = [
    ("page: blast list", STAFF, lambda w: reverse("blast-list")),
    ("page: overview", STAFF, lambda w: reverse("overview")),
    ("page: compare", STAFF, lambda w: reverse("compare")),
    ("page: status", STAFF, lambda w: reverse("status")),
    ("page: blast", STAFF, lambda w: reverse("blast-detail", args=[w.sending.pk])),
    ("page: blast live", STAFF, lambda w: reverse("blast-live", args=[w.sending.pk])),
    ("page: sequence", STAFF, lambda w: reverse("blast-sequence", args=[w.sending.pk])),
    ("page: recipient", STAFF, lambda w: reverse("recipient-detail", args=[w.done.pk, w.unknown.pk])),
    ("page: new blast form", MARKETERS, lambda w: reverse("blast-new")),
    ("page: CSV export", MARKETERS, lambda w: reverse("blast-recipients-csv", args=[w.sending.pk])),
    ("api: blasts", STAFF, lambda w: "/api/blasts"),
    ("api: blast", STAFF, lambda w: f"/api/blasts/{w.sending.pk}"),
    ("api: metrics", STAFF, lambda w: f"/api/blasts/{w.sending.pk}/metrics"),
    ("api: stuck", STAFF, lambda w: f"/api/blasts/{w.sending.pk}/stuck-recipients"),
    ("api: recipients", STAFF, lambda w: f"/api/blasts/{w.sending.pk}/recipients"),
    ("api: audit", STAFF, lambda w: f"/api/blasts/{w.sending.pk}/audit"),
    ("api: recipient", STAFF, lambda w: f"/api/recipients/{w.read.pk}"),
    ("api: history", STAFF, lambda w: f"/api/recipients/{w.read.pk}/history"),
    ("api: CSV export", MARKETERS, lambda w: f"/api/blasts/{w.sending.pk}/recipients?format=csv"),
    ("api: schema", STAFF, lambda w: "/api/schema/"),
    ("admin: blasts", VIEWERS, lambda w: f"{ADMIN_PATH}blasts/blast/"),
    ("admin: blast", VIEWERS, lambda w: f"{ADMIN_PATH}blasts/blast/{w.sending.pk}/change/"),
    ("admin: recipients", VIEWERS, lambda w: f"{ADMIN_PATH}blasts/blastrecipient/"),
    ("admin: audit trail", VIEWERS, lambda w: f"{ADMIN_PATH}blasts/auditrecord/"),
    ("admin: opt-outs", VIEWERS, lambda w: f"{ADMIN_PATH}blasts/optout/"),
    ("admin: devices", VIEWERS, lambda w: f"{ADMIN_PATH}blasts/device/"),
    ("admin: new blast form", MARKETERS, lambda w: f"{ADMIN_PATH}blasts/blast/add/"),
    ("admin: new opt-out form", MARKETERS, lambda w: f"{ADMIN_PATH}blasts/optout/add/"),
    ("admin: new device form", ADMINS, lambda w: f"{ADMIN_PATH}blasts/device/add/"),
    ("admin: users", ADMINS, lambda w: f"{ADMIN_PATH}auth/user/"),
    ("admin: add an audit row", set(), lambda w: f"{ADMIN_PATH}blasts/auditrecord/add/"),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("name", "allowed", "path"), READS, ids=[read[0] for read in READS])
def test_who_may_look_at_what(db, role, name, allowed, path):
    w = world()
    client, _ = login(role)
    response = client.get(path(w))
    if role in allowed:
        assert response.status_code == 200, response.content[:300]
    elif role == "anonymous":
        assert response.status_code in (302, 401, 403)
        assert response.status_code != 302 or "login" in response["Location"]
    else:
        assert response.status_code == 403
    if name.endswith("CSV export"):
        exported = AuditRecord.objects.filter(action=Did.EXPORTED)
        assert exported.count() == (role in allowed)


# --- writes: (name, allowed roles, interface, do, done, audit action) ---------------------------------


def admin_action(action: str, model: str, pk: int, **more) -> tuple[str, dict]:
    return f"{ADMIN_PATH}blasts/{model}/", {"action": action, "_selected_action": [pk], **more}


WRITES = [
    ("page: send", MARKETERS, "page", Did.QUEUED,
     lambda c, w: c.post(reverse("blast-action", args=[w.draft.pk, "send"])),
     lambda w: state(w.draft) == Blast.State.QUEUED),
    ("page: pause", MARKETERS, "page", Did.PAUSED,
     lambda c, w: c.post(reverse("blast-action", args=[w.sending.pk, "pause"])),
     lambda w: state(w.sending) == Blast.State.PAUSED),
    ("page: resume", MARKETERS, "page", Did.RESUMED,
     lambda c, w: c.post(reverse("blast-action", args=[w.paused.pk, "resume"])),
     lambda w: state(w.paused) == Blast.State.QUEUED),
    ("page: cancel", MARKETERS, "page", Did.CANCELLED,
     lambda c, w: c.post(reverse("blast-action", args=[w.draft.pk, "cancel"])),
     lambda w: state(w.draft) == Blast.State.CANCELLED),
    ("page: check statuses", MARKETERS, "page", Did.STATUS_CHECK,
     lambda c, w: c.post(reverse("blast-action", args=[w.sending.pk, "check_status"])),
     lambda w: w.sending.status_checks.exists()),
    ("page: resend unknown", ADMINS, "page", Did.RESENT_UNKNOWN,
     lambda c, w: c.post(reverse("blast-action", args=[w.done.pk, "resend_unknown"])),
     lambda w: BlastRecipient.objects.get(pk=w.unknown.pk).status == Status.QUEUED),
    ("page: follow up", MARKETERS, "page", Did.FOLLOW_UP,
     lambda c, w: c.post(reverse("blast-follow-up", args=[w.sending.pk]),
                         {"status": "READ_ACK", "min_age_hours": 0, "message": "Still keen?"}),
     lambda w: Blast.objects.filter(parent=w.sending).exists()),
    ("page: create", MARKETERS, "page", Did.CREATED,
     lambda c, w: c.post(reverse("blast-new"), {"tag": "New", "follow_up_stage": "Initial", "message": "Hi",
                                                "device": "5850", "recipients_text": "0123456789"}),
     lambda w: Blast.objects.filter(tag="New").exists()),
    ("page: match", ADMINS, "page", Did.MATCHED,
     lambda c, w: c.post(reverse("recipient-match", args=[w.done.pk, w.unknown.pk]), {"message_id": "MSG-LOST"}),
     lambda w: BlastRecipient.objects.get(pk=w.unknown.pk).message_id == "MSG-LOST"),
    ("page: mark closed", MARKETERS, "page", Did.MARKED,
     lambda c, w: c.post(reverse("recipient-mark", args=[w.sending.pk, w.read.pk]), {"status": "CLOSED"}),
     lambda w: BlastRecipient.objects.get(pk=w.read.pk).status == Status.CLOSED),
    ("api: create", MARKETERS, "api", Did.CREATED,
     lambda c, w: c.post("/api/blasts", {"blast_tag": "New", "message": "Hi", "device": "5850",
                                         "recipients": ["0123456789"]}, content_type="application/json"),
     lambda w: Blast.objects.filter(tag="New").exists()),
    ("api: send", MARKETERS, "api", Did.QUEUED,
     lambda c, w: c.post(f"/api/blasts/{w.draft.pk}/send"),
     lambda w: state(w.draft) == Blast.State.QUEUED),
    ("api: pause", MARKETERS, "api", Did.PAUSED,
     lambda c, w: c.post(f"/api/blasts/{w.sending.pk}/pause"),
     lambda w: state(w.sending) == Blast.State.PAUSED),
    ("api: resume", MARKETERS, "api", Did.RESUMED,
     lambda c, w: c.post(f"/api/blasts/{w.paused.pk}/resume"),
     lambda w: state(w.paused) == Blast.State.QUEUED),
    ("api: cancel", MARKETERS, "api", Did.CANCELLED,
     lambda c, w: c.post(f"/api/blasts/{w.draft.pk}/cancel"),
     lambda w: state(w.draft) == Blast.State.CANCELLED),
    ("api: check statuses", MARKETERS, "api", Did.STATUS_CHECK,
     lambda c, w: c.post(f"/api/blasts/{w.sending.pk}/check-status"),
     lambda w: w.sending.status_checks.exists()),
    ("api: follow up", MARKETERS, "api", Did.FOLLOW_UP,
     lambda c, w: c.post(f"/api/blasts/{w.sending.pk}/follow-up", {"status": "READ_ACK", "message": "Still keen?"},
                         content_type="application/json"),
     lambda w: Blast.objects.filter(parent=w.sending).exists()),
    ("api: mark", MARKETERS, "api", Did.MARKED,
     lambda c, w: c.post(f"/api/recipients/{w.read.pk}/mark", {"status": "CLOSED"}, content_type="application/json"),
     lambda w: BlastRecipient.objects.get(pk=w.read.pk).status == Status.CLOSED),
    ("admin: send", MARKETERS, "admin", Did.QUEUED,
     lambda c, w: c.post(*admin_action("send", "blast", w.draft.pk)),
     lambda w: state(w.draft) == Blast.State.QUEUED),
    ("admin: pause", MARKETERS, "admin", Did.PAUSED,
     lambda c, w: c.post(*admin_action("pause", "blast", w.sending.pk)),
     lambda w: state(w.sending) == Blast.State.PAUSED),
    ("admin: resume", MARKETERS, "admin", Did.RESUMED,
     lambda c, w: c.post(*admin_action("resume", "blast", w.paused.pk)),
     lambda w: state(w.paused) == Blast.State.QUEUED),
    ("admin: cancel", MARKETERS, "admin", Did.CANCELLED,
     lambda c, w: c.post(*admin_action("cancel", "blast", w.draft.pk)),
     lambda w: state(w.draft) == Blast.State.CANCELLED),
    ("admin: resend unknown", ADMINS, "admin", Did.RESENT_UNKNOWN,
     lambda c, w: c.post(*admin_action("resend_unknown", "blast", w.done.pk)),
     lambda w: BlastRecipient.objects.get(pk=w.unknown.pk).status == Status.QUEUED),
    ("admin: mark closed", MARKETERS, "admin", Did.MARKED,
     lambda c, w: c.post(*admin_action("mark_closed", "blastrecipient", w.read.pk)),
     lambda w: BlastRecipient.objects.get(pk=w.read.pk).status == Status.CLOSED),
    ("admin: edit a draft", MARKETERS, "admin", Did.EDITED,
     lambda c, w: c.post(f"{ADMIN_PATH}blasts/blast/{w.draft.pk}/change/",
                         {"tag": "Renamed", "follow_up_stage": "Initial", "message": "Hello {name}", "device": "5850"}),
     lambda w: Blast.objects.get(pk=w.draft.pk).tag == "Renamed"),
    ("admin: add an opt-out", MARKETERS, "admin", Did.OPT_OUT_ADDED,
     lambda c, w: c.post(f"{ADMIN_PATH}blasts/optout/add/", {"phone": "0123456780", "reason": "Asked by phone"}),
     lambda w: OptOut.objects.filter(phone="+60123456780").exists()),
    ("admin: remove an opt-out", MARKETERS, "admin", Did.OPT_OUT_REMOVED,
     lambda c, w: c.post(*admin_action("remove", "optout", OptOut.objects.create(phone="+60123456781").pk,
                                       apply="1", reason="Asked to hear from us again")),
     lambda w: not OptOut.objects.filter(phone="+60123456781").exists()),
    ("admin: change a device", ADMINS, "admin", Did.DEVICE_CHANGED,
     lambda c, w: c.post(f"{ADMIN_PATH}blasts/device/{Device.objects.create(device_id='5850').pk}/change/",
                         {"device_id": "5850", "label": "Sales phone", "days": "", "time_zone": "Asia/Kuala_Lumpur"}),
     lambda w: Device.objects.filter(label="Sales phone").exists()),
]  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("name", "allowed", "via", "did", "do", "done"), WRITES, ids=[w[0] for w in WRITES])
def test_who_may_change_what_and_each_change_leaves_one_audit_row(
    db, role, name, allowed, via, did, do, done
):
    w = world()
    client, user = login(role)
    response = do(client, w)
    assert done(w) is (role in allowed), response.content[:500]
    records = list(AuditRecord.objects.all())
    if role not in allowed:
        assert records == []
        # The admin leaves an action out of the list for whom may not use it: posting it changes nothing.
        assert response.status_code in (302, 401, 403) or via == "admin"
        return
    assert [(r.actor, r.actor_name, r.via, r.action) for r in records] == [(user, user.username, via, did)]


def test_the_api_says_which_permission_is_missing(db):
    w = world()
    client, _ = login("viewer")
    response = client.post(f"/api/blasts/{w.draft.pk}/send")
    assert response.status_code == 403
    assert "Can send, pause, resume and cancel blasts" in response.json()["detail"]
    assert state(w.draft) == Blast.State.DRAFT


def test_a_viewer_sees_no_button_it_may_not_use_and_a_marketer_sees_them(db):
    w = world()
    viewer, _ = login("viewer")
    html = viewer.get(reverse("blast-detail", args=[w.draft.pk])).content.decode()
    assert "Export CSV" not in html and ">Send<" not in html and "Create follow-up draft" not in html
    assert "New blast" not in html
    marketer, _ = login("marketer")
    html = marketer.get(reverse("blast-detail", args=[w.draft.pk])).content.decode()
    assert (
        "Export CSV" in html and ">Send<" in html and "Create follow-up draft" in html and "New blast" in html
    )
    assert "Resend unknown" not in marketer.get(reverse("blast-detail", args=[w.done.pk])).content.decode()


def test_nobody_changes_or_deletes_an_audit_row_in_the_admin(db):
    w = world()
    client, _ = login("superuser")
    client.post(reverse("blast-action", args=[w.draft.pk, "send"]))
    record = AuditRecord.objects.get()
    assert client.get(f"{ADMIN_PATH}blasts/auditrecord/{record.pk}/change/").status_code == 200  # to read
    client.post(f"{ADMIN_PATH}blasts/auditrecord/{record.pk}/change/", {"about": "forged"})
    assert (
        client.post(f"{ADMIN_PATH}blasts/auditrecord/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert AuditRecord.objects.get().about == record.about


def test_the_blast_page_and_the_api_show_the_blasts_own_history(db):
    w = world()
    client, _ = login("marketer")
    client.post(reverse("blast-action", args=[w.sending.pk, "pause"]))
    html = client.get(reverse("blast-detail", args=[w.sending.pk])).content.decode()
    assert "Who did what" in html and "marketer" in html and "Paused" in html
    [row] = client.get(f"/api/blasts/{w.sending.pk}/audit").json()
    assert (row["actor"], row["via"], row["action"], row["detail"]) == (
        "marketer", "page", "paused", {"reason": "Paused by marketer."}
    )  # fmt: skip


def test_automatic_moves_are_audited_as_the_system_with_their_reason(db):
    w = world()
    blast_pause(blast=w.sending, reason="5 sends in a row failed: device offline.")
    record = AuditRecord.objects.get()
    assert (record.actor, record.via, record.action, record.detail) == (
        None, AuditRecord.Via.SYSTEM, Did.PAUSED, {"reason": "5 sends in a row failed: device offline."}
    )  # fmt: skip


def test_prune_keeps_the_audit_trail_for_its_own_time(db, settings):
    settings.AUDIT_KEEP_DAYS = 30
    old, recent = (
        AuditRecord.objects.create(via="system", action=Did.COMPLETED, about=name) for name in "ab"
    )
    AuditRecord.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=31))
    AuditRecord.objects.filter(pk=recent.pk).update(at=timezone.now() - timedelta(days=29))
    call_command("prune_records", "--days", "7", stdout=io.StringIO())
    assert list(AuditRecord.objects.values_list("about", flat=True)) == ["b"]


def test_a_command_that_sends_a_draft_leaves_its_audit_row(db, settings, wsapme_sandbox):
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, wsapme_sandbox.url
    settings.SEND_RATE_PER_MINUTE = 0
    blast = make_blast(2, device="sandbox")
    call_command("send_blast", str(blast.pk), stdout=io.StringIO(), stderr=io.StringIO())
    rows = list(AuditRecord.objects.filter(blast=blast).order_by("id").values_list("actor", "via", "action"))
    assert rows == [
        (None, "system", Did.CREATED),
        (None, "command", Did.QUEUED),
        (None, "system", Did.COMPLETED),
    ]


def test_nothing_that_counts_is_deleted_in_the_admin_not_even_by_a_superuser(db):
    """Blasts are cancelled, recipients stay, devices are changed: deleting any would leave no trace."""
    w = world()
    client, _ = login("superuser")
    device = Device.objects.create(device_id="5850")
    for model, pk in (("blast", w.draft.pk), ("blastrecipient", w.read.pk), ("device", device.pk)):
        assert client.post(f"{ADMIN_PATH}blasts/{model}/{pk}/delete/", {"post": "yes"}).status_code == 403
        client.post(
            f"{ADMIN_PATH}blasts/{model}/",
            {"action": "delete_selected", "_selected_action": [pk], "post": "yes"},
        )
    assert (
        Blast.objects.filter(pk=w.draft.pk).exists() and BlastRecipient.objects.filter(pk=w.read.pk).exists()
    )
    assert Device.objects.filter(pk=device.pk).exists()


def test_an_export_whose_filter_holds_unstorable_text_is_still_audited(db):
    """A query string is text from outside: a NUL in it must not break the audit row
    (PostgreSQL refuses it in jsonb), and the export answers, not a traceback."""
    w = world()
    client, _ = login("marketer")
    response = client.get(reverse("blast-recipients-csv", args=[w.sending.pk]), {"q": "a\x00b", "x\x00": "c"})
    assert response.status_code == 200
    assert AuditRecord.objects.get().detail["filters"] == {"q": "a\ufffdb", "x\ufffd": "c"}
