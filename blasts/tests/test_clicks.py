"""Clicks beside the funnel (issue 21, tracked links): counted once, shown on the page, the API and
the CSV alike, filtered, and followed up."""

import csv
import io
import random
import re
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from blasts.follow_ups import follow_up_audience
from blasts.models import Blast, BlastRecipient, Link
from blasts.reporting.clicks import Clicks, blast_clicks
from blasts.reporting.funnels import blast_funnel, blast_variant_funnels

from .conftest import make_blast, new_phone

Status = BlastRecipient.Status
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
STATUSES = [*Status]
LINKED = "Diskaun 20% hari ini: https://shop.example.com/promo"


def recipient(blast, status, *, sent_at=None, clicked_at=None, variant="", canary=False, **times):
    return BlastRecipient.objects.create(
        blast=blast, phone=new_phone(), status=status, sent_at=sent_at, clicked_at=clicked_at,
        variant=variant, is_canary=canary, **times,
    )  # fmt: skip


def random_blast(rng: random.Random) -> Blast:
    """Recipients at any status (canaries among them), some sent, some of those clicked, in variants A-C."""
    blast = make_blast(0, message=LINKED)
    for _ in range(rng.randint(0, 40)):
        status = rng.choice(STATUSES)
        sent_at = (
            T0 + timedelta(seconds=rng.randint(0, 3600))
            if status >= Status.PENDING or rng.random() < 0.2
            else None
        )
        clicked = rng.random() < 0.4
        clicked_at = sent_at + timedelta(seconds=rng.randint(1, 86400)) if clicked and sent_at else None
        if clicked and not sent_at and rng.random() < 0.5:  # a click before its send was recorded
            clicked_at = T0
        recipient(blast, status, sent_at=sent_at, clicked_at=clicked_at, variant=rng.choice("ABC"),
                  canary=rng.random() < 0.1)  # fmt: skip
    return blast


def by_hand(rows) -> Clicks:
    sent = [r for r in rows if not r.is_canary and r.status >= Status.PENDING]
    clicked = [r for r in sent if r.clicked_at]
    waits = [r.clicked_at - r.sent_at for r in clicked if r.sent_at]
    return Clicks(
        clicked=len(clicked),
        sent=len(sent),
        first_click_at=min((r.clicked_at for r in clicked), default=None),
        median_to_click=statistics.median(waits) if waits else None,
    )


@pytest.mark.parametrize("seed", range(8))
def test_clicks_are_what_a_direct_count_of_the_recipients_says(db, seed, django_assert_max_num_queries):
    blast = random_blast(random.Random(seed))
    rows = list(blast.recipients.all())

    with django_assert_max_num_queries(1 if connection.vendor == "postgresql" else 2):
        clicks = blast_clicks(blast.pk)
    with django_assert_max_num_queries(1 if connection.vendor == "postgresql" else 2):
        variants = blast_clicks(blast.pk, by_variant=True)

    assert clicks == by_hand(rows)
    assert variants == {letter: by_hand([r for r in rows if r.variant == letter]) for letter in "ABCDE"}
    # Sent is the funnel's sent, whole and per variant.
    assert clicks.sent == blast_funnel(blast.pk).sent
    funnels = blast_variant_funnels(blast.pk, "ABCDE")
    assert {letter: c.sent for letter, c in variants.items()} == {k: f.sent for k, f in funnels.items()}
    assert (clicks.rate.successes, clicks.rate.trials) == (clicks.clicked, clicks.sent)


def test_the_median_time_to_click_is_from_each_ones_send(db):
    blast = make_blast(0, message=LINKED)
    for sent_minute, click_minutes in ((0, 10), (30, 50), (5, 65), (0, None)):  # waits 10, 20, 60 min
        clicked_at = T0 + timedelta(minutes=click_minutes) if click_minutes is not None else None
        recipient(blast, Status.READ_ACK, sent_at=T0 + timedelta(minutes=sent_minute), clicked_at=clicked_at)

    clicks = blast_clicks(blast.pk)

    assert (clicks.clicked, clicks.sent, clicks.median_to_click) == (3, 4, timedelta(minutes=20))
    assert clicks.first_click_at == T0 + timedelta(minutes=10)
    assert clicks.metrics() == {
        "clicked": 3,
        "rate": 0.75,
        "first_click_at": T0 + timedelta(minutes=10),
        "median_seconds_to_click": 1200.0,
    }


def test_a_blast_nobody_was_sent_has_no_click_and_no_times(db):
    blast = make_blast(2, message=LINKED)
    assert blast_clicks(blast.pk) == Clicks(0, 0, None, None)
    assert blast_clicks(blast.pk).rate.value is None


# --- the blast page --------------------------------------------------------------------------------

PAGE_CLICKED = re.compile(r'class="clicked-count">(\d+)<')


def test_the_page_shows_clicks_beside_the_funnel_with_interval_first_click_and_median(admin_client):
    blast = make_blast(0, message=LINKED)
    for minutes in (4, 6):
        recipient(blast, Status.READ_ACK, sent_at=T0, clicked_at=T0 + timedelta(minutes=minutes))
    for _ in range(2):
        recipient(blast, Status.DELIVERY_ACK, sent_at=T0)

    page = admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()
    live = admin_client.get(reverse("blast-live", args=[blast.pk])).content.decode()

    for html in (page, live):  # the live section that refreshes carries them
        section = html[html.index('id="clicks"') :]
        assert PAGE_CLICKED.search(section).group(1) == "2"
        assert "50.0%" in section and "15.0 to 85.0" in section  # Wilson's interval of 2 of 4
        first = timezone.localtime(T0 + timedelta(minutes=4))
        assert f"{first:%a} {first.day} {first:%b}, {first:%H:%M}" in section
        assert '<td data-label="Median time to click">5 min</td>' in section
        assert "?follow_up=READ_NOT_CLICKED#follow-up" in section
        assert "?follow_up=CLICKED_NOT_REPLIED#follow-up" in section


@pytest.mark.parametrize(
    ("message", "track_links", "with_link_rows", "shown"),
    [
        (LINKED, True, False, True),  # will be tracked
        (LINKED, False, False, False),  # sent as written
        ("No link here", True, False, False),
        ("No link here", False, True, True),  # tracked when it was sent
    ],
)
def test_clicks_show_only_for_a_blast_with_tracked_links(
    admin_client, message, track_links, with_link_rows, shown
):
    blast = make_blast(1, message=message, track_links=track_links)
    if with_link_rows:
        Link.objects.create(
            code="c0de", recipient=blast.recipients.get(), position=0, url="https://x.example"
        )
    page = admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()
    assert ('id="clicks"' in page) is shown


def test_without_a_public_address_links_go_out_as_written_and_no_clicks_are_shown(admin_client, settings):
    settings.PUBLIC_BASE_URL = ""
    blast = make_blast(1, message=LINKED)
    assert 'id="clicks"' not in admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()


# --- one definition: page, API and CSV agree ---------------------------------------------------------


def test_the_page_the_api_and_the_csv_count_the_same_clicks(admin_client):
    # Clicked or not at every status, a canary that clicked, and a click before its send was recorded.
    blast = make_blast(0, message=LINKED)
    for status in Status:
        recipient(blast, status, sent_at=T0, clicked_at=T0 + H)
        recipient(blast, status, sent_at=T0)
    canary = recipient(blast, Status.READ_ACK, sent_at=T0, clicked_at=T0 + H, canary=True)
    recipient(blast, Status.SENDING, clicked_at=T0 + H)
    expected = blast_clicks(blast.pk).clicked
    assert expected == 6  # PENDING to CLOSED: the ladder is the sent

    page = admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()
    metrics = admin_client.get(f"/api/blasts/{blast.pk}/metrics").json()["clicks"]
    listed = admin_client.get("/api/blasts").json()["results"][0]["metrics"]["clicks"]
    detail = admin_client.get(f"/api/blasts/{blast.pk}").json()["metrics"]["clicks"]
    rows = list(csv.DictReader(io.StringIO(b"".join(
        admin_client.get(reverse("blast-recipients-csv", args=[blast.pk]) + "?stage=sent&clicked=true")
        .streaming_content).decode())))  # fmt: skip
    api_rows = admin_client.get(
        f"/api/blasts/{blast.pk}/recipients?stage=sent&clicked=true&page_size=500"
    ).json()

    places = {
        "page": int(PAGE_CLICKED.search(page).group(1)),
        "api metrics": metrics["clicked"],
        "api list": listed["clicked"],
        "api detail": detail["clicked"],
        "csv": sum(1 for row in rows if row["phone"] != canary.phone),  # listed, but left out of rates
        "api recipients": sum(1 for r in api_rows["results"] if not r["is_canary"]),
    }
    assert places == dict.fromkeys(places, expected)
    assert metrics == listed == detail
    assert metrics["rate"] == round(expected / blast_funnel(blast.pk).sent, 4)


# --- the recipients' filter, CSV and API fields --------------------------------------------------------


def test_recipients_filter_on_clicked_on_the_page_and_the_api(admin_client):
    blast = make_blast(0, message=LINKED)
    clicker = recipient(blast, Status.READ_ACK, sent_at=T0, clicked_at=T0 + H, variant="B")
    other = recipient(blast, Status.READ_ACK, sent_at=T0, variant="A")

    for value, expected in (("true", clicker), ("false", other)):
        page = admin_client.get(reverse("blast-detail", args=[blast.pk]), {"clicked": value})
        assert [r.phone for r in page.context["page"]] == [expected.phone]
        api = admin_client.get(f"/api/blasts/{blast.pk}/recipients", {"clicked": value}).json()
        assert [r["phone"] for r in api["results"]] == [expected.phone]
    everyone = admin_client.get(f"/api/blasts/{blast.pk}/recipients").json()["results"]
    assert {(r["phone"], r["variant"], r["clicked_at"] is not None) for r in everyone} == {
        (clicker.phone, "B", True),
        (other.phone, "A", False),
    }
    form = admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()
    assert '<option value="true">Clicked</option>' in form


def test_the_csv_has_each_recipients_variant_and_first_click(admin_client):
    blast = make_blast(0, message=LINKED)
    recipient(blast, Status.READ_ACK, sent_at=T0, clicked_at=T0 + H, variant="B")
    recipient(blast, Status.READ_ACK, sent_at=T0, variant="A")
    rows = list(csv.DictReader(io.StringIO(b"".join(
        admin_client.get(reverse("blast-recipients-csv", args=[blast.pk])).streaming_content).decode())))  # fmt: skip
    clicked = timezone.localtime(T0 + H).isoformat(sep=" ", timespec="seconds")
    assert [(row["variant"], row["clicked_at"]) for row in rows] == [("B", clicked), ("A", "")]


# --- follow-ups ----------------------------------------------------------------------------------------


@pytest.fixture
def click_cells(db):
    """Read or clicked a while ago or just now; replied clickers are done with."""
    now = timezone.now()
    parent = make_blast(0, message=LINKED)
    cells = {
        # read 3 days ago, no click; its status changed just now (a late receipt): the age is from reading
        "old_reader": recipient(parent, Status.READ_ACK, sent_at=now - 80 * H, read_at=now - 72 * H,
                                status_changed_at=now),
        "new_reader": recipient(parent, Status.READ_ACK, sent_at=now - 2 * H, read_at=now - H),
        "old_clicker": recipient(parent, Status.READ_ACK, sent_at=now - 80 * H, read_at=now - 79 * H,
                                 clicked_at=now - 48 * H, status_changed_at=now),
        "new_clicker": recipient(parent, Status.READ_ACK, sent_at=now - 80 * H, read_at=now - 79 * H,
                                 clicked_at=now - H),
        "replied_clicker": recipient(parent, Status.REPLIED, sent_at=now - 80 * H, read_at=now - 79 * H,
                                     clicked_at=now - 48 * H),
        "replied_reader": recipient(parent, Status.REPLIED, sent_at=now - 80 * H, read_at=now - 79 * H),
        "delivered": recipient(parent, Status.DELIVERY_ACK, sent_at=now - 80 * H),
        "canary_reader": recipient(parent, Status.READ_ACK, sent_at=now - 80 * H, read_at=now - 79 * H,
                                   canary=True),
    }  # fmt: skip
    return parent, {r.phone: name for name, r in cells.items()}


@pytest.mark.parametrize(
    ("cell", "hours", "expected"),
    [
        ("READ_NOT_CLICKED", 0, {"old_reader", "new_reader"}),
        ("READ_NOT_CLICKED", 24, {"old_reader"}),  # read over a day ago, though its status moved just now
        ("CLICKED_NOT_REPLIED", 0, {"old_clicker", "new_clicker"}),
        ("CLICKED_NOT_REPLIED", 24, {"old_clicker"}),  # clicked over a day ago
        ("READ_ACK", 24, set()),  # the status cells still age from the status change
    ],
)
def test_the_click_cells_are_audiences_aged_from_reading_or_clicking(click_cells, cell, hours, expected):
    parent, names = click_cells
    audience = follow_up_audience(parent, cell, timedelta(hours=hours))
    assert {names[phone] for phone in audience.values_list("phone", flat=True)} == expected


@pytest.mark.parametrize(
    ("cell", "expected"), [("READ_NOT_CLICKED", {"old_reader"}), ("CLICKED_NOT_REPLIED", {"old_clicker"})]
)
def test_the_page_and_the_api_follow_up_the_click_cells(admin_client, click_cells, cell, expected):
    parent, names = click_cells
    page = admin_client.get(reverse("blast-detail", args=[parent.pk]), {"follow_up": cell}).content.decode()
    assert f'<option value="{cell}" selected>' in page

    response = admin_client.post(
        reverse("blast-follow-up", args=[parent.pk]),
        {"status": cell, "min_age_hours": "24", "message": "Still keen, {first_name}?"},
    )
    from_page = Blast.objects.get(parent=parent)
    assert response.url == reverse("blast-detail", args=[from_page.pk])
    answer = admin_client.post(
        f"/api/blasts/{parent.pk}/follow-up/",
        {"status": cell, "min_age_hours": 24, "message": "Still keen?"},
        content_type="application/json",
    )
    assert answer.status_code == 201, answer.content
    from_api = Blast.objects.get(pk=answer.json()["blast_id"])
    for follow_up in (from_page, from_api):
        assert {names[p] for p in follow_up.recipients.values_list("phone", flat=True)} == expected


def test_an_empty_click_cell_says_so_and_creates_nothing(admin_client):
    parent = make_blast(0, message=LINKED)
    recipient(parent, Status.READ_ACK, sent_at=T0, read_at=T0)
    answer = admin_client.post(
        f"/api/blasts/{parent.pk}/follow-up/",
        {"status": "CLICKED_NOT_REPLIED", "message": "Hi"},
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert answer.json() == {"status": ['No recipient of this blast is in "clicked, not replied" now.']}
    assert Blast.objects.count() == 1
