from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from blasts.models import Blast, BlastRecipient, OptOut, StatusHistory
from blasts.services import recipient_advance

Status = BlastRecipient.Status
ADD_URL = reverse("admin:blasts_blast_add")
BLASTS_URL = reverse("admin:blasts_blast_changelist")
RECIPIENTS_URL = reverse("admin:blasts_blastrecipient_changelist")


def blast_form(**overrides):
    return {
        "tag": "Product Launch",
        "follow_up_stage": "Initial",
        "message": "Hi {name}, our new range is here.",
        "device": "5850",
        "recipients_text": "0123456789,Aisyah\n0198765432",
        **overrides,
    }


def test_marketer_creates_a_blast_by_pasting_recipients(admin_client, admin_user):
    response = admin_client.post(
        ADD_URL, blast_form(recipients_text="0123456789,Aisyah\n0198765432\n60123456789")
    )

    blast = Blast.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:blasts_blast_change", args=[blast.pk])
    assert (blast.tag, blast.device, blast.created_by, blast.state) == (
        "Product Launch", "5850", admin_user, Blast.State.DRAFT
    )  # fmt: skip
    assert list(blast.recipients.values_list("phone", "name")) == [
        ("+60123456789", "Aisyah"),
        ("+60198765432", ""),
    ]
    messages = [str(m) for m in response.wsgi_request._messages]
    assert "2 recipients added, 1 duplicates dropped, 0 opted out (skipped)" in messages


def test_marketer_creates_a_blast_from_a_csv_upload(admin_client):
    upload = SimpleUploadedFile("list.csv", "\ufeffphone,name\n0123456789,Aisyah\n".encode(), "text/csv")
    admin_client.post(ADD_URL, blast_form(recipients_text="", recipients_file=upload))
    assert list(BlastRecipient.objects.values_list("phone", "name")) == [("+60123456789", "Aisyah")]


def test_the_device_field_starts_with_the_configured_device(admin_client, settings):
    settings.WSAPME_DEVICE = "7777"
    form = admin_client.get(ADD_URL).context["adminform"].form
    assert form["device"].value() == "7777"


@pytest.mark.parametrize(
    ("overrides", "field", "error"),
    [
        (
            {"recipients_text": "0123456789\nnonsense"},
            "recipients_text",
            "Line 2: 'nonsense' is not a phone number.",
        ),
        ({"recipients_text": ""}, "recipients_text", "No recipients: give at least one phone number."),
        (
            {
                "recipients_text": "",
                "recipients_file": SimpleUploadedFile("l.csv", b"phone\n0123456789\n12\n"),
            },
            "recipients_file",
            "CSV line 3: '12' is too short.",
        ),
        (
            {
                "recipients_text": "",
                "recipients_file": SimpleUploadedFile("l.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
            },
            "recipients_file",
            "This file is not text: save it as 'CSV UTF-8', or upload the .xlsx.",
        ),
        ({"tag": ""}, "tag", "This field is required."),
    ],
)
def test_bad_input_shows_errors_on_the_form_and_creates_nothing(admin_client, overrides, field, error):
    response = admin_client.post(ADD_URL, blast_form(**overrides))

    assert response.status_code == 200
    assert error in response.context["adminform"].form.errors[field]
    assert not Blast.objects.exists() and not BlastRecipient.objects.exists()


def test_too_many_recipients_is_a_form_error(admin_client, settings):
    settings.BLAST_MAX_RECIPIENTS = 1
    response = admin_client.post(ADD_URL, blast_form())
    assert "the limit per blast is 1 (Line 2 is the first over it)" in response.content.decode()
    assert not Blast.objects.exists()


def test_blast_list_shows_funnel_counts(admin_client, blast_factory):
    blast = blast_factory(3, status=Status.PENDING)
    recipient_advance(
        recipient=blast.recipients.first(), status=Status.READ_ACK, source=StatusHistory.Source.POLL
    )

    response = admin_client.get(BLASTS_URL)

    row = response.context["cl"].result_list[0]
    assert (row.funnel.total, row.funnel.sent, row.funnel.received, row.funnel.read) == (3, 3, 1, 1)
    assert '<td class="field-read">1</td>' in response.content.decode()


def test_blast_list_takes_the_same_queries_for_one_blast_and_a_hundred(admin_client, blast_factory):
    def count_queries():
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(BLASTS_URL).status_code == 200
        return len(queries)

    blast_factory(2, status=Status.DELIVERY_ACK)
    one = count_queries()
    for _ in range(99):
        blast_factory(2, status=Status.DELIVERY_ACK)
    assert count_queries() == one


def test_blast_list_filters_by_tag_stage_state_and_date(admin_client, blast_factory):
    launch = blast_factory(1, tag="Launch")
    promo = blast_factory(1, tag="Promo", follow_up_stage="Follow-up 1")
    old = blast_factory(1, tag="Promo")
    Blast.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=40), state=Blast.State.COMPLETED
    )

    def listed(query):
        return {b.pk for b in admin_client.get(BLASTS_URL, query).context["cl"].result_list}

    assert listed({"tag": "Promo"}) == {promo.pk, old.pk}
    assert listed({"follow_up_stage": "Follow-up 1"}) == {promo.pk}
    assert listed({"state__exact": "completed"}) == {old.pk}
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    since = str(midnight - timedelta(days=7))  # the admin's "Past 7 days" link
    assert listed({"created_at__gte": since}) == {launch.pk, promo.pk}


def test_blast_page_shows_its_funnel_and_where_recipients_are_stuck(admin_client, blast_factory):
    blast = blast_factory(4, status=Status.SERVER_ACK)
    recipient_advance(
        recipient=blast.recipients.first(), status=Status.READ_ACK, source=StatusHistory.Source.POLL
    )
    page = admin_client.get(reverse("admin:blasts_blast_change", args=[blast.pk])).content.decode()
    assert "<tr><th>Sent</th><td>4</td></tr>" in page
    assert "<tr><th>Received</th><td>1 (25% of sent)</td></tr>" in page
    assert "<tr><th>Closed</th><td>0 (0% of sent)</td></tr>" in page
    assert "<tr><th>Server ack</th><td>3</td></tr>" in page
    assert f"?blast__id__exact={blast.pk}" in page


def test_message_is_frozen_once_a_blast_leaves_draft(admin_client, blast_factory):
    blast = blast_factory(1)
    url = reverse("admin:blasts_blast_change", args=[blast.pk])
    assert "message" in admin_client.get(url).context["adminform"].form.fields

    Blast.objects.filter(pk=blast.pk).update(state=Blast.State.SENDING)
    assert "message" not in admin_client.get(url).context["adminform"].form.fields


def test_recipient_list_filters_by_blast_and_status_and_searches_phone_and_message_id(
    admin_client, blast_factory
):
    blast = blast_factory(3, status=Status.PENDING)
    first, second, _ = blast.recipients.all()
    BlastRecipient.objects.filter(pk=second.pk).update(message_id="3EB0WM0F161ED1BD7A6532")
    recipient_advance(recipient=first, status=Status.DELIVERY_ACK, source=StatusHistory.Source.WEBHOOK)
    blast_factory(1)  # another blast's recipient

    def listed(query):
        return {r.pk for r in admin_client.get(RECIPIENTS_URL, query).context["cl"].result_list}

    assert len(listed({"blast__id__exact": blast.pk})) == 3
    assert listed({"status__exact": Status.DELIVERY_ACK}) == {first.pk}
    assert listed({"q": "3EB0WM0F161ED1BD7A6532"}) == {second.pk}
    local = "0" + first.phone.removeprefix("+60")  # as a marketer types it
    assert listed({"q": local}) == {first.pk}


@pytest.mark.parametrize(
    ("action", "status"), [("mark_replied", Status.REPLIED), ("mark_closed", Status.CLOSED)]
)
def test_mark_actions_go_through_the_ledger(admin_client, admin_user, blast_factory, action, status):
    blast = blast_factory(2, status=Status.READ_ACK)
    first, second = blast.recipients.all()
    recipient_advance(recipient=second, status=Status.CLOSED, source=StatusHistory.Source.MANUAL)

    admin_client.post(RECIPIENTS_URL, {"action": action, "_selected_action": [first.pk, second.pk]})

    first.refresh_from_db()
    assert first.status == status
    entry = first.history.latest("id")
    assert (entry.to_status, entry.source, entry.actor) == (status, StatusHistory.Source.MANUAL, admin_user)
    assert second.history.filter(to_status=status, actor=admin_user).count() == 0


def test_history_is_read_only(admin_client, blast_factory):
    recipient = blast_factory(1, status=Status.PENDING).recipients.get()
    page = admin_client.get(reverse("admin:blasts_blastrecipient_change", args=[recipient.pk]))
    assert page.status_code == 200
    assert "Pending" in page.content.decode()
    entry = recipient.history.get()
    assert admin_client.get(reverse("admin:blasts_statushistory_add")).status_code == 403
    assert (
        admin_client.post(
            reverse("admin:blasts_statushistory_delete", args=[entry.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert StatusHistory.objects.filter(pk=entry.pk).exists()
    assert admin_client.get(reverse("admin:blasts_blastrecipient_add")).status_code == 403


# --- sending controls -------------------------------------------------------------------------


def change_url(blast):
    return reverse("admin:blasts_blast_change", args=[blast.pk])


def act(admin_client, blast, action, follow_to=None):
    data = {"action": action, "_selected_action": [blast.pk]}
    if follow_to:
        data["next"] = follow_to
    return admin_client.post(BLASTS_URL, data)


def test_a_drafts_page_offers_send_and_the_button_comes_back_to_it(admin_client, blast_factory):
    blast = blast_factory(2)
    page = admin_client.get(change_url(blast)).content.decode()
    assert '<input type="hidden" name="action" value="send">' in page
    assert 'value="pause"' not in page

    response = act(admin_client, blast, "send", follow_to=change_url(blast))

    assert response.status_code == 302 and response.url == change_url(blast)
    blast.refresh_from_db()
    assert blast.state == Blast.State.QUEUED


def test_buttons_never_redirect_off_site(admin_client, blast_factory):
    response = act(admin_client, blast_factory(1), "send", follow_to="https://evil.example/")
    assert response.status_code == 302 and response.url == BLASTS_URL


@pytest.mark.parametrize(
    ("start", "action", "end"),
    [
        (Blast.State.QUEUED, "pause", Blast.State.PAUSED),
        (Blast.State.SENDING, "pause", Blast.State.PAUSED),
        (Blast.State.PAUSED, "resume", Blast.State.QUEUED),
        (Blast.State.PAUSED, "cancel", Blast.State.CANCELLED),
        (Blast.State.DRAFT, "cancel", Blast.State.CANCELLED),
    ],
)
def test_lifecycle_actions(admin_client, admin_user, blast_factory, start, action, end):
    blast = blast_factory(1)
    Blast.objects.filter(pk=blast.pk).update(state=start)
    act(admin_client, blast, action)
    blast.refresh_from_db()
    assert blast.state == end
    if end == Blast.State.PAUSED:
        assert blast.state_reason == f"Paused by {admin_user}."


def test_an_action_that_does_not_apply_says_why_and_changes_nothing(admin_client, blast_factory):
    blast = blast_factory(1)
    response = act(admin_client, blast, "resume")
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("Only a paused blast can be resumed; this one is draft." in m for m in messages)
    blast.refresh_from_db()
    assert blast.state == Blast.State.DRAFT


def test_resend_unknown_requeues_only_unknown_recipients(admin_client, admin_user, blast_factory):
    blast = blast_factory(2)
    unknown, sent = blast.recipients.all()
    recipient_advance(recipient=unknown, status=Status.SENDING, source=StatusHistory.Source.SEND)
    recipient_advance(recipient=unknown, status=Status.UNKNOWN, source=StatusHistory.Source.INFERRED)
    recipient_advance(recipient=sent, status=Status.PENDING, source=StatusHistory.Source.SEND)
    Blast.objects.filter(pk=blast.pk).update(state=Blast.State.COMPLETED)

    act(admin_client, blast, "resend_unknown")

    assert list(blast.recipients.order_by("id").values_list("status", flat=True)) == [
        Status.QUEUED,
        Status.PENDING,
    ]
    assert Blast.objects.get(pk=blast.pk).state == Blast.State.QUEUED
    assert unknown.history.latest("id").actor == admin_user


def test_blast_page_shows_the_eta_and_a_personalised_preview(admin_client, blast_factory, settings):
    settings.SEND_RATE_PER_MINUTE = 20
    blast = blast_factory(2, message="Hi {first_name}!")
    page = admin_client.get(change_url(blast)).content.decode()
    assert "2 to send, at 20 a minute, on device 5850" in page
    assert "<td>Hi Name!</td>" in page


def test_an_unknown_placeholder_is_a_form_error(admin_client):
    response = admin_client.post(ADD_URL, blast_form(message="Hi {nmae}"))
    assert response.context["adminform"].form.errors["message"] == [
        "No recipient has {nmae}: use {name}, {first_name}, {phone} or an attribute your contacts have "
        "(a column of the file or an import, e.g. {city})."
    ]
    assert not Blast.objects.exists()


def test_opt_outs_are_stored_as_e164_and_bad_numbers_are_form_errors(admin_client):
    url = reverse("admin:blasts_optout_add")
    admin_client.post(url, {"phone": "012-345 6789", "reason": "asked by phone"})
    assert list(OptOut.objects.values_list("phone", flat=True)) == ["+60123456789"]

    for phone, error in [
        ("nonsense", "This is not a phone number."),
        ("0123456789", "has opted out already"),
    ]:
        response = admin_client.post(url, {"phone": phone})
        assert response.status_code == 200
        assert error in response.context["adminform"].form.errors["phone"][0]
