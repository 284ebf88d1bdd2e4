"""Follow-ups from any funnel cell and age, the sequence view, and timing per follow-up stage."""

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from blasts.follow_ups import follow_up_audience
from blasts.models import Blast, BlastRecipient, StatusHistory
from blasts.reporting.compare import blast_sequence
from blasts.reporting.timing import blasts_timings_by_stage
from blasts.services import recipient_advance

from .conftest import make_blast

Status = BlastRecipient.Status
H = timedelta(hours=1)


def at(recipient, status, *, ago=timedelta(0)):
    """Move one recipient to `status` (through the ledger) and make it stand there since `ago`."""
    recipient_advance(recipient=recipient, status=Status.PENDING, source=StatusHistory.Source.SEND)
    recipient_advance(recipient=recipient, status=status, source=StatusHistory.Source.WEBHOOK)
    BlastRecipient.objects.filter(pk=recipient.pk).update(status_changed_at=timezone.now() - ago)
    return recipient


@pytest.fixture
def cells(db):
    """A blast with recipients in several cells, some standing there longer than others."""
    parent = make_blast(6)
    old_read, new_read, old_delivered, new_delivered, old_ack, replied = parent.recipients.order_by("id")
    at(old_read, Status.READ_ACK, ago=72 * H)
    at(new_read, Status.READ_ACK, ago=2 * H)
    at(old_delivered, Status.DELIVERY_ACK, ago=48 * H)
    at(new_delivered, Status.DELIVERY_ACK)
    at(old_ack, Status.SERVER_ACK, ago=30 * H)
    at(replied, Status.REPLIED, ago=80 * H)
    return parent, {r.phone: name for r, name in zip(parent.recipients.order_by("id"), "abcdef", strict=True)}


@pytest.mark.parametrize(
    ("status", "hours", "expected"),
    [
        (Status.READ_ACK, 0, "ab"),  # read, not replied
        (Status.READ_ACK, 24, "a"),  # read, not replied for more than a day
        (Status.DELIVERY_ACK, 0, "cd"),  # delivered, not read
        (Status.DELIVERY_ACK, 48, "c"),
        (Status.DELIVERY_ACK, 49, ""),
        (Status.SERVER_ACK, 24, "e"),  # at the server for over a day: probably offline or blocked
        (Status.PENDING, 0, ""),
    ],
)
def test_any_funnel_cell_and_age_is_an_audience(cells, status, hours, expected):
    parent, names = cells
    audience = follow_up_audience(parent, status, timedelta(hours=hours))
    assert "".join(sorted(names[phone] for phone in audience.values_list("phone", flat=True))) == expected


def test_the_page_makes_a_follow_up_for_a_cell_older_than_an_age(admin_client, cells):
    parent, names = cells
    response = admin_client.post(
        reverse("blast-follow-up", args=[parent.pk]),
        {"status": "READ_ACK", "min_age_hours": "24", "message": "Still thinking about it, {first_name}?"},
    )
    follow_up = Blast.objects.get(parent=parent)
    assert response.url == reverse("blast-detail", args=[follow_up.pk])
    assert [names[phone] for phone in follow_up.recipients.values_list("phone", flat=True)] == ["a"]
    assert (follow_up.follow_up_stage, follow_up.state) == ("Follow-up 1", Blast.State.DRAFT)


@pytest.mark.parametrize(
    ("hours", "error"),
    [
        ("-1", "Ensure this value is greater than or equal to 0."),
        ("99999", "Ensure this value is less than or equal to 2160."),
        ("soon", "Enter a whole number."),
        ("100", "No recipient of this blast has been at read for 4 d 4 h or more."),
    ],
)
def test_a_bad_age_is_a_form_error_and_creates_nothing(admin_client, cells, hours, error):
    parent, _ = cells
    response = admin_client.post(
        reverse("blast-follow-up", args=[parent.pk]),
        {"status": "READ_ACK", "min_age_hours": hours, "message": "Hi"},
        follow=True,
    )
    assert error in [str(m) for m in response.context["messages"]]
    assert Blast.objects.count() == 1


def test_each_stuck_row_is_one_click_from_a_prefilled_follow_up(admin_client, cells):
    parent, _ = cells
    page = admin_client.get(reverse("blast-detail", args=[parent.pk])).content.decode()
    link = f"{reverse('blast-detail', args=[parent.pk])}?follow_up=SERVER_ACK#follow-up"
    assert f'href="{link}"' in page
    assert "?follow_up=REPLIED" not in page  # replied people get a person, not a blast

    prefilled = admin_client.get(link.split("#")[0]).content.decode()
    assert '<option value="SERVER_ACK" selected>' in prefilled


def test_the_api_makes_a_follow_up_for_a_cell_and_age(admin_client, cells):
    parent, names = cells
    response = admin_client.post(
        f"/api/blasts/{parent.pk}/follow-up/",
        {"status": "DELIVERY_ACK", "min_age_hours": 24, "message": "Did you see it, {name}?"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    follow_up = Blast.objects.get(pk=body["blast_id"])
    assert (body["parent"], body["follow_up_stage"], body["state"], body["metrics"]["total"]) == (
        parent.pk,
        "Follow-up 1",
        "draft",
        1,
    )
    assert [names[p] for p in follow_up.recipients.values_list("phone", flat=True)] == ["c"]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"status": "PENDING", "message": "Hi"}, "status", "No recipient of this blast is at pending now."),
        ({"status": "REPLIED", "message": "Hi"}, "status", '"REPLIED" is not a valid choice.'),
        ({"status": "READ_ACK", "min_age_hours": -1, "message": "Hi"}, "min_age_hours", None),
        ({"status": "READ_ACK", "message": "Hi {nmae}"}, "message", None),
        ({"status": "READ_ACK"}, "message", "This field is required."),
    ],
)
def test_the_api_says_which_field_is_wrong_and_creates_nothing(admin_client, cells, data, field, message):
    parent, _ = cells
    response = admin_client.post(f"/api/blasts/{parent.pk}/follow-up/", data, content_type="application/json")
    assert response.status_code == 400
    assert field in response.json()
    if message:
        assert response.json()[field] == [message]
    assert Blast.objects.count() == 1


def sent_blast(phones, *, stage="Initial", parent=None):
    """A blast to exactly these phones, every one sent."""
    blast = make_blast(0, follow_up_stage=stage)
    Blast.objects.filter(pk=blast.pk).update(parent=parent)
    for phone in phones:
        at(BlastRecipient.objects.create(blast=blast, phone=phone), Status.PENDING)
    blast.refresh_from_db()
    return blast


def test_the_sequence_counts_each_person_once_with_cumulative_rates(db):
    phones = [f"+60123{n:06d}" for n in range(10)]
    initial = sent_blast(phones)
    # Initial: 2 replied, 1 closed (a sale counts as a reply too).
    for phone, status in zip(phones, [Status.REPLIED, Status.REPLIED, Status.CLOSED], strict=False):
        recipient_advance(recipient=initial.recipients.get(phone=phone), status=status, source="manual")
    follow_up_1 = sent_blast(phones[3:7], stage="Follow-up 1", parent=initial)
    recipient_advance(
        recipient=follow_up_1.recipients.get(phone=phones[3]), status=Status.REPLIED, source="manual"
    )
    # A second follow-up 1 on the same day (another cell) shares the step.
    sibling = sent_blast(phones[7:9], stage="Follow-up 1", parent=initial)
    follow_up_2 = sent_blast(phones[4:6], stage="Follow-up 2", parent=follow_up_1)
    recipient_advance(
        recipient=follow_up_2.recipients.get(phone=phones[4]), status=Status.CLOSED, source="manual"
    )
    # Someone who replied again to a later step is still one person.
    recipient_advance(
        recipient=follow_up_2.recipients.get(phone=phones[5]), status=Status.REPLIED, source="manual"
    )

    root, base, steps = blast_sequence(follow_up_2)  # from any blast of the family

    assert (root, base) == (initial, 10)
    assert [(s.stage, [b.pk for b in s.blasts]) for s in steps] == [
        ("Initial", [initial.pk]),
        ("Follow-up 1", [follow_up_1.pk, sibling.pk]),
        ("Follow-up 2", [follow_up_2.pk]),
    ]
    assert [(s.funnel.sent, s.funnel.replied) for s in steps] == [(10, 3), (6, 1), (2, 2)]
    assert [(s.replied_so_far, s.closed_so_far) for s in steps] == [(3, 1), (4, 1), (6, 2)]


def test_the_sequence_page_shows_each_step_and_the_blast_page_links_to_it(admin_client):
    initial = sent_blast(["+60123000001", "+60123000002"])
    recipient_advance(recipient=initial.recipients.first(), status=Status.REPLIED, source="manual")
    follow_up = sent_blast(["+60123000002"], stage="Follow-up 1", parent=initial)

    detail = admin_client.get(reverse("blast-detail", args=[follow_up.pk])).content.decode()
    assert reverse("blast-sequence", args=[follow_up.pk]) in detail
    assert f"{reverse('compare')}?a=blast:{initial.pk}&amp;b=blast:{follow_up.pk}" in detail

    page = admin_client.get(reverse("blast-sequence", args=[follow_up.pk])).content.decode()
    assert "2 people were sent the first message" in page
    assert "<td>1 (50%)</td>" in page  # replied so far after each step
    assert page.index(">Initial<") < page.index(">Follow-up 1<")


def test_a_blast_alone_has_no_sequence_link(admin_client):
    blast = make_blast(1)
    page = admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()
    assert reverse("blast-sequence", args=[blast.pk]) not in page


T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def test_timing_per_follow_up_stage_against_hand_computed_medians(admin_client):
    initial = make_blast(3, follow_up_stage="Initial")
    follow_up = make_blast(2, follow_up_stage="Follow-up 1")
    # Delivered after 10, 20 and 60 minutes (median 20, p90 60); the follow-up after 1 h and 3 h.
    for blast, minutes in ((initial, [10, 20, 60]), (follow_up, [60, 180])):
        for recipient, after in zip(blast.recipients.order_by("id"), minutes, strict=True):
            BlastRecipient.objects.filter(pk=recipient.pk).update(
                sent_at=T0, delivered_at=T0 + timedelta(minutes=after)
            )

    timings = blasts_timings_by_stage(Blast.objects.all())

    delivered = {stage: next(t for t in rows if t.stage == "delivered") for stage, rows in timings.items()}
    assert (delivered["Initial"].median, delivered["Initial"].p90) == (
        timedelta(minutes=20),
        timedelta(hours=1),
    )
    assert (delivered["Follow-up 1"].median, delivered["Follow-up 1"].p90) == (2 * H, 3 * H)  # (1 + 3) / 2
    page = admin_client.get(reverse("overview")).content.decode()
    # The overview reads the times from histograms (reporting/rollups.py): within about 9 %, and says so.
    assert "<td>18 min / 1 h 2 min</td>" in page and "<td>1 h 59 min / 2 h 57 min</td>" in page
