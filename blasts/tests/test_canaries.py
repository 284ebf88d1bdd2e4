"""Canary recipients: the team's phones in every blast at first, middle and last, left out of every rate."""

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import reverse

from blasts.follow_ups import blast_create_follow_up
from blasts.lifecycle import blast_queue
from blasts.models import BlastRecipient
from blasts.reporting.funnels import blast_funnel
from blasts.reporting.timing import blast_timings
from blasts.selectors import blast_stuck

from .conftest import make_blast
from .test_follow_ups import at

Status = BlastRecipient.Status
TEAM = ["+601110000001", "+601110000002", "+601110000003"]


@pytest.fixture
def canaries(settings):
    settings.CANARY_PHONES = ["011-1000 0001", "+601110000002", "601110000003"]  # any spelling, as elsewhere
    return TEAM


def send_order(blast) -> list[str]:
    return ["canary" if r.is_canary else "audience" for r in blast.recipients.order_by("id")]


def test_canaries_go_first_in_the_middle_and_last(db, canaries):
    blast = make_blast(5)
    assert send_order(blast) == ["canary", *["audience"] * 3, "canary", *["audience"] * 2, "canary"]
    assert [r.phone for r in blast.recipients.filter(is_canary=True).order_by("id")] == TEAM


@pytest.mark.parametrize(
    ("team", "order"),
    [
        ([], ["audience"] * 3),
        (TEAM[:1], ["canary", "audience", "audience", "audience"]),
        (TEAM[:2], ["canary", "audience", "audience", "audience", "canary"]),
    ],
)
def test_fewer_canaries_take_the_first_then_the_last_place(db, settings, team, order):
    settings.CANARY_PHONES = team
    assert send_order(make_blast(3)) == order


def test_a_team_phone_in_the_audience_is_a_canary_not_a_recipient(db, canaries):
    from blasts.recipients import parse_recipients
    from blasts.services import blast_create

    created = blast_create(
        tag="T",
        message="Hi",
        device="5850",
        recipients=parse_recipients([("Line 1", "+60123450001", ""), ("Line 2", TEAM[1], "Ali")]),
    )
    assert (created.created, created.canaries) == (1, 3)
    assert created.blast.recipients.get(phone=TEAM[1]).is_canary


def test_canaries_are_left_out_of_every_rate(admin_client, canaries):
    blast = make_blast(4)
    audience = blast.recipients.filter(is_canary=False).order_by("id")
    for recipient in audience:
        at(recipient, Status.DELIVERY_ACK)
    for canary in blast.recipients.filter(is_canary=True):
        at(canary, Status.REPLIED)

    funnel = blast_funnel(blast.pk)
    assert (funnel.total, funnel.sent, funnel.received, funnel.replied) == (4, 4, 4, 0)
    assert {row["status"]: row["count"] for row in blast_stuck(blast.pk)}["REPLIED"] == 0
    assert next(t for t in blast_timings([blast.pk]) if t.stage == "replied").count == 0
    metrics = admin_client.get(f"/api/blasts/{blast.pk}/metrics/").json()
    assert (metrics["total"], metrics["replied"], metrics["rates"]["received"]) == (4, 0, 1.0)
    listed = admin_client.get(f"/api/blasts/{blast.pk}/recipients/?page_size=50").json()["results"]
    assert sum(r["is_canary"] for r in listed) == 3 and len(listed) == 7


def test_the_blast_page_shows_the_canaries_and_whether_they_arrived(admin_client, canaries):
    blast = make_blast(2)
    first = blast.recipients.filter(is_canary=True).order_by("id").first()
    at(first, Status.DELIVERY_ACK)
    page = admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()
    assert "<h2>Canaries</h2>" in page
    assert f"{TEAM[0]}</a>: Delivered" in page and f"{TEAM[1]}</a>: Queued" in page


def test_a_blast_of_only_canaries_cannot_be_sent(db, settings):
    settings.CANARY_PHONES = ["+60123450001"]
    blast = make_blast(0)
    assert blast.recipients.get().is_canary
    with pytest.raises(ValidationError, match="no recipients"):
        blast_queue(blast=blast)


def test_a_follow_up_takes_no_canary_from_its_parent_but_gets_its_own(db, canaries):
    parent = make_blast(2)
    for recipient in parent.recipients.all():
        at(recipient, Status.READ_ACK)
    follow_up = blast_create_follow_up(parent=parent, status=Status.READ_ACK, message="Still keen?")
    assert send_order(follow_up) == ["canary", "audience", "canary", "audience", "canary"]
    assert follow_up.recipients.filter(is_canary=False).count() == 2


def test_a_canary_that_is_not_a_phone_number_stops_the_start(settings):
    settings.CANARY_PHONES = ["+601110000001", "team-phone"]
    with pytest.raises(SystemCheckError, match="CANARY_PHONES: 'team-phone' is not a phone number"):
        call_command("check")


def test_canaries_are_sent_despite_the_frequency_cap_and_the_follow_up_recheck(db, settings, wsapme_sandbox):
    from blasts.gateway.client import get_client
    from blasts.sending.worker import send_due

    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, wsapme_sandbox.url
    settings.SEND_RATE_PER_MINUTE, settings.CANARY_PHONES = 0, TEAM[:1]
    first = make_blast(1, device="sandbox")
    blast_queue(blast=first)
    send_due(client=get_client())
    canary = first.recipients.get(is_canary=True)
    at(canary, Status.REPLIED)  # a teammate answered the first blast
    audience = first.recipients.get(is_canary=False)
    at(audience, Status.READ_ACK)
    settings.FREQUENCY_CAP_DAYS = 3
    follow_up = blast_create_follow_up(parent=first, status=Status.READ_ACK, message="Still keen?")
    blast_queue(blast=follow_up)

    send_due(client=get_client())

    sent = dict(follow_up.recipients.values_list("is_canary", "status"))
    assert sent[True] == Status.PENDING  # replied before and messaged today: a canary goes anyway
    assert sent[False] == Status.PENDING  # its own audience is exempt from the cap as a follow-up
