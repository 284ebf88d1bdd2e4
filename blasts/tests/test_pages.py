"""The marketers' pages: access, filters, constant query counts, forms, actions, follow-ups, exports."""

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from blasts.gateway.client import get_client
from blasts.lifecycle import blast_queue
from blasts.models import Blast, BlastRecipient, StatusHistory
from blasts.services import recipient_advance
from blasts.tracking.polling import NOTHING_TO_CHECK, poll_due

from .conftest import make_blast

Status = BlastRecipient.Status


def advance(blast, *statuses):
    """Move the blast's recipients, in order, to the given statuses (the rest stay queued)."""
    for recipient, status in zip(blast.recipients.order_by("id"), statuses, strict=False):
        recipient_advance(recipient=recipient, status=Status.PENDING, source=StatusHistory.Source.SEND)
        if status != Status.PENDING:
            recipient_advance(recipient=recipient, status=status, source=StatusHistory.Source.WEBHOOK)


def queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.mark.parametrize("name", ["blast-list", "overview", "blast-new"])
def test_pages_need_a_staff_sign_in(client, django_user_model, name):
    url = reverse(name)
    response = client.get(url)
    assert response.status_code == 302 and response.url == f"{reverse('login')}?next={url}"
    client.force_login(django_user_model.objects.create_user("someone"))
    assert client.get(url).status_code == 403


def test_blast_page_needs_a_staff_sign_in(client, blast_factory):
    blast = blast_factory(1)
    for url in (reverse("blast-detail", args=[blast.pk]), reverse("blast-live", args=[blast.pk])):
        assert client.get(url).status_code == 302
    assert client.post(reverse("blast-action", args=[blast.pk, "send"])).status_code == 302
    assert Blast.objects.get(pk=blast.pk).state == Blast.State.DRAFT


def test_the_list_shows_each_blasts_funnel_and_totals_for_the_filtered_set(admin_client):
    launch = make_blast(3, tag="Launch")
    advance(launch, Status.REPLIED, Status.DELIVERY_ACK)
    make_blast(2, tag="Raya")

    page = admin_client.get(reverse("blast-list"), {"tag": "launch"})

    assert [blast for blast, _ in page.context["rows"]] == [launch]
    total = page.context["total"]
    assert (total.sent, total.received, total.read, total.replied) == (2, 2, 1, 1)
    assert "sent 2 · received 2 · read 1 · replied 1 · closed 0" in page.content.decode()


def test_a_bad_filter_is_shown_on_the_page_not_a_500(admin_client):
    page = admin_client.get(reverse("blast-list"), {"date": "not-a-date", "state": "exploded"})
    assert page.status_code == 200
    assert "Enter a valid date." in page.content.decode()


def test_the_list_takes_the_same_queries_for_one_blast_and_many(admin_client):
    advance(make_blast(3), Status.READ_ACK)
    one = queries(admin_client, reverse("blast-list"))
    for _ in range(30):
        advance(make_blast(3), Status.READ_ACK)
    assert queries(admin_client, reverse("blast-list")) == one


def test_the_overview_takes_the_same_queries_for_one_blast_and_many(admin_client):
    advance(make_blast(2, tag="A"), Status.REPLIED)
    one = queries(admin_client, reverse("overview"))
    for n in range(20):
        advance(make_blast(2, tag=f"T{n % 4}", follow_up_stage=f"S{n % 3}"), Status.DELIVERY_ACK)
    assert queries(admin_client, reverse("overview")) == one


def test_the_blast_page_takes_the_same_queries_for_few_recipients_and_many(admin_client, settings):
    settings.BLAST_MAX_RECIPIENTS = 500
    small, large = make_blast(3), make_blast(300)
    advance(small, Status.READ_ACK, Status.REPLIED)
    advance(
        large, *([Status.READ_ACK, Status.REPLIED, Status.DELIVERY_ACK] * 100)[:299]
    )  # one unsent, like small
    queries(
        admin_client, reverse("blast-detail", args=[small.pk])
    )  # first visit creates the device's pacing row
    assert queries(admin_client, reverse("blast-detail", args=[small.pk])) == queries(
        admin_client, reverse("blast-detail", args=[large.pk])
    )


def test_the_blast_page_shows_the_funnel_stages_and_where_recipients_stand(admin_client):
    blast = make_blast(4)
    advance(blast, Status.REPLIED, Status.READ_ACK, Status.DELIVERY_ACK, Status.PENDING)
    BlastRecipient.objects.filter(pk=blast.recipients.order_by("id").last().pk).update(
        status_changed_at=timezone.now() - timedelta(hours=30)
    )

    page = admin_client.get(reverse("blast-detail", args=[blast.pk]))
    html = page.content.decode()

    steps = {step["stage"]: step for step in page.context["funnel"].steps()}
    assert (steps["received"]["count"], steps["received"]["percent"], steps["received"]["drop"]) == (3, 75, 1)
    assert (steps["read"]["conversion"], steps["replied"]["conversion"]) == (67, 50)
    assert "Funnel: sent 4, received 3, read 2, replied 1, closed 0." in html
    pending = next(row for row in page.context["stuck"] if row["status"] == "PENDING")
    assert (pending["count"], pending["ages"]["1-3d"]) == (1, 1)
    assert "check that the phone is online" in pending["probable_cause"]
    assert f'href="/blasts/{blast.pk}/recipients.csv?status=PENDING">CSV</a>' in html  # one click to the list


def test_the_live_section_refreshes_while_a_blast_is_in_flight(admin_client):
    blast = make_blast(2)
    blast_queue(blast=blast)
    live = admin_client.get(reverse("blast-live", args=[blast.pk])).content.decode()
    assert 'hx-trigger="every 3s"' in live and "<html" not in live

    advance(blast, Status.READ_ACK, Status.REPLIED)
    # Finished: replies may still come for a while, so it keeps refreshing, less often ...
    Blast.objects.filter(pk=blast.pk).update(state=Blast.State.COMPLETED, finished_at=timezone.now())
    assert (
        'hx-trigger="every 15s"' in admin_client.get(reverse("blast-live", args=[blast.pk])).content.decode()
    )
    # ... until the reply window is over.
    Blast.objects.filter(pk=blast.pk).update(finished_at=timezone.now() - timedelta(days=4))
    assert "hx-trigger" not in admin_client.get(reverse("blast-live", args=[blast.pk])).content.decode()


def test_every_filter_on_the_pages_has_a_label(admin_client):
    blast = make_blast(1)
    for url in (reverse("blast-list"), reverse("overview"), reverse("blast-detail", args=[blast.pk])):
        html = admin_client.get(url).content.decode()
        assert "[invalid name]" not in html and "is greater than" not in html


def test_the_csv_link_keeps_the_pages_recipient_filters(admin_client):
    blast = make_blast(1)
    page = admin_client.get(reverse("blast-detail", args=[blast.pk]), {"status": "QUEUED"}).content.decode()
    assert f'href="/blasts/{blast.pk}/recipients.csv?status=QUEUED"' in page


def test_the_recipients_table_filters_by_status_and_search(admin_client):
    blast = make_blast(3)
    advance(blast, Status.READ_ACK, Status.DELIVERY_ACK)
    first = blast.recipients.order_by("id").first()
    url = reverse("blast-detail", args=[blast.pk])

    assert [r.pk for r in admin_client.get(url, {"status": "READ_ACK"}).context["page"]] == [first.pk]
    assert len(admin_client.get(url, {"stage": "received"}).context["page"]) == 2
    assert [r.pk for r in admin_client.get(url, {"q": first.phone[-6:]}).context["page"]] == [first.pk]
    bad = admin_client.get(url, {"status": "EXPLODED"})
    assert bad.status_code == 200 and len(bad.context["page"]) == 0


def test_a_recipients_timeline_lists_every_change_with_its_source(admin_client):
    blast = make_blast(1)
    advance(blast, Status.READ_ACK)
    recipient = blast.recipients.get()
    page = admin_client.get(reverse("recipient-detail", args=[blast.pk, recipient.pk])).content.decode()
    assert page.count("<li><strong>") == 2 and "Webhook" in page and "Send" in page


@pytest.mark.parametrize(
    ("state", "action", "expected_state", "message"),
    [
        (Blast.State.DRAFT, "send", Blast.State.QUEUED, "Queued: the sender sends it now."),
        (Blast.State.SENDING, "pause", Blast.State.PAUSED, "Paused."),
        (Blast.State.PAUSED, "resume", Blast.State.QUEUED, "Resumed."),
        (
            Blast.State.DRAFT,
            "resume",
            Blast.State.DRAFT,
            "Only a paused blast can be resumed; this one is draft.",
        ),
        (
            Blast.State.DRAFT,
            "pause",
            Blast.State.DRAFT,
            "Only a queued or sending blast can be paused; this one is draft.",
        ),
        (Blast.State.DRAFT, "explode", Blast.State.DRAFT, "That is not an action."),
    ],
)
def test_the_blast_pages_buttons(admin_client, state, action, expected_state, message):
    blast = make_blast(1)
    Blast.objects.filter(pk=blast.pk).update(state=state)
    response = admin_client.post(reverse("blast-action", args=[blast.pk, action]), follow=True)
    assert Blast.objects.get(pk=blast.pk).state == expected_state
    assert message in [str(m) for m in response.context["messages"]]


def test_a_follow_up_draft_takes_the_recipients_stuck_at_a_status(admin_client):
    parent = make_blast(3, follow_up_stage="Initial")
    advance(parent, Status.DELIVERY_ACK, Status.DELIVERY_ACK, Status.REPLIED)

    response = admin_client.post(
        reverse("blast-follow-up", args=[parent.pk]),
        {"status": "DELIVERY_ACK", "message": "Still keen, {name}?"},
    )

    follow_up = Blast.objects.exclude(pk=parent.pk).get()
    assert response.url == reverse("blast-detail", args=[follow_up.pk])
    assert (follow_up.parent, follow_up.follow_up_stage, follow_up.state) == (
        parent,
        "Follow-up 1",
        Blast.State.DRAFT,
    )
    delivered = parent.recipients.filter(status=Status.DELIVERY_ACK).values_list("phone", flat=True)
    assert set(follow_up.recipients.values_list("phone", flat=True)) == set(delivered)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"status": "READ_ACK", "message": "Hi"}, "No recipient of this blast is at read now."),
        ({"status": "DELIVERY_ACK", "message": "Hi {nmae}"}, "No recipient has {nmae}"),
        ({"status": "CLOSED", "message": "Hi"}, "Select a valid choice."),
    ],
)
def test_a_follow_up_that_cannot_be_made_says_why(admin_client, data, error):
    parent = make_blast(1)
    advance(parent, Status.DELIVERY_ACK)
    response = admin_client.post(reverse("blast-follow-up", args=[parent.pk]), data, follow=True)
    assert any(error in str(m) for m in response.context["messages"])
    assert Blast.objects.count() == 1


def form_data(**overrides):
    return {
        "tag": "Raya",
        "follow_up_stage": "Initial",
        "message": "Hi {first_name}, Raya sale!",
        "device": "5850",
        "recipients_text": "0123456789,Aisyah binti Ali\n0198765432",
        **overrides,
    }


def test_the_new_blast_page_previews_without_creating(admin_client):
    response = admin_client.post(reverse("blast-new"), form_data(preview="1"))
    html = response.content.decode()
    assert response.status_code == 200 and not Blast.objects.exists()
    assert "Hi Aisyah, Raya sale!" in html and "2 recipients, 0 duplicates dropped." in html


def test_the_new_blast_page_creates_a_draft_and_goes_to_it(admin_client, admin_user):
    response = admin_client.post(reverse("blast-new"), form_data(create="1"))
    blast = Blast.objects.get()
    assert response.url == reverse("blast-detail", args=[blast.pk])
    assert (blast.created_by, blast.recipients.count()) == (admin_user, 2)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"recipients_text": "0123456789\nnonsense"}, "Line 2: &#x27;nonsense&#x27; is not a phone number."),
        ({"recipients_text": ""}, "No recipients: give at least one phone number."),
        ({"message": "Hi {nmae}"}, "No recipient has {nmae}"),
        ({"tag": ""}, "This field is required."),
        ({"scheduled_at": "tomorrow-ish"}, "Enter a valid date/time."),
    ],
)
def test_bad_input_on_the_new_blast_page_is_shown_on_the_form(admin_client, overrides, error):
    response = admin_client.post(reverse("blast-new"), form_data(**overrides))
    assert response.status_code == 200 and error in response.content.decode()
    assert not Blast.objects.exists()


def test_the_csv_export_follows_the_recipient_filters(admin_client):
    blast = make_blast(3)
    advance(blast, Status.READ_ACK)
    response = admin_client.get(reverse("blast-recipients-csv", args=[blast.pk]), {"status": "READ_ACK"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert rows[0][:4] == ["phone", "name", "status", "status_code"] and len(rows) == 2
    assert rows[1][2:4] == ["Read", "READ_ACK"]


# --- check statuses now ----------------------------------------------------------------------------------


def finished_long_ago(blast, count):
    """The blast sent `count` messages (PENDING, with ids) and finished days ago: its page no longer refreshes."""
    advance(blast, *[Status.PENDING] * count)
    for recipient in blast.recipients.all():
        BlastRecipient.objects.filter(pk=recipient.pk).update(message_id=f"M{recipient.pk}")
    Blast.objects.filter(pk=blast.pk).update(
        state=Blast.State.COMPLETED, finished_at=timezone.now() - timedelta(days=4)
    )
    return blast


def live(client, blast) -> str:
    return client.get(reverse("blast-live", args=[blast.pk])).content.decode()


def test_check_statuses_now_answers_at_once_and_the_live_section_follows_the_check(
    admin_client, mocked_gateway
):
    blast = finished_long_ago(make_blast(3), 3)
    assert "hx-trigger" not in live(admin_client, blast)

    response = admin_client.post(reverse("blast-action", args=[blast.pk, "check_status"]), follow=True)

    assert not mocked_gateway.calls  # the poller asks the gateway, not the request
    assert "Checking 3 messages' statuses…" in [str(m) for m in response.context["messages"]]
    html = response.content.decode()
    assert 'hx-trigger="every 3s"' in html and "Status check: 0 of 3 checked, 0 updated" in html
    assert '<progress max="3" value="0"' in html

    mocked_gateway.answers[f"M{blast.recipients.first().pk}"] = {"success": True, "status": "READ_ACK"}
    mocked_gateway.answers[f"M{blast.recipients.last().pk}"] = (503, {}, "down")
    poll_due(client=get_client())

    done = live(admin_client, blast)
    finished_at = timezone.localtime(blast.status_checks.get().finished_at)
    assert f"Checked 3 messages at {finished_at:%H:%M}: 1 updated (1 could not be checked)." in done
    assert "hx-trigger" not in done  # finished: the page stops refreshing


def test_a_check_with_nothing_checked_for_a_while_says_the_poller_may_not_be_running(admin_client):
    blast = finished_long_ago(make_blast(2), 2)
    admin_client.post(reverse("blast-action", args=[blast.pk, "check_status"]))
    assert "may not be running" not in live(admin_client, blast)

    blast.status_checks.update(requested_at=timezone.now() - timedelta(minutes=5))

    html = live(admin_client, blast)
    assert "Nothing checked for 5 min: the status poller may not be running" in html
    assert f'href="{reverse("status")}"' in html


def test_check_statuses_now_with_nothing_to_check_says_so(admin_client, mocked_gateway):
    blast = make_blast(2)
    response = admin_client.post(reverse("blast-action", args=[blast.pk, "check_status"]), follow=True)
    assert [str(m) for m in response.context["messages"]] == [NOTHING_TO_CHECK]
    assert not blast.status_checks.exists() and "Status check" not in response.content.decode()


def test_check_statuses_now_is_for_staff_only(client, django_user_model):
    blast = finished_long_ago(make_blast(1), 1)
    url = reverse("blast-action", args=[blast.pk, "check_status"])
    assert client.post(url).status_code == 302  # to the sign-in
    client.force_login(django_user_model.objects.create_user("someone"))
    assert client.post(url).status_code == 403
    assert not blast.status_checks.exists()
