"""Honest comparisons: 95% intervals checked against values worked out by hand, and the page's verdicts."""

import pytest
from django.urls import reverse

from blasts.models import BlastRecipient
from blasts.reporting.stats import Difference, Rate, wilson
from blasts.services import recipient_advance
from blasts.templatetags.blasts_extras import interval, percent

from .conftest import make_blast
from .test_follow_ups import sent_blast

Status = BlastRecipient.Status


def test_wilson_interval_matches_the_hand_computed_one():
    # 56/70, z = 1.96: centre = (0.8 + z²/140) / (1 + z²/70) = 0.827439 / 1.054880 = 0.784391;
    # half = z·√(0.16/70 + z²/19600) / 1.054880 = 1.96 · 0.049817 / 1.054880 = 0.092562.
    low, high = wilson(56, 70)
    assert low == pytest.approx(0.691829, abs=5e-6)
    assert high == pytest.approx(0.876953, abs=5e-6)
    # 48/80: centre = 0.624009 / 1.048019 = 0.595418, half = 0.110006 / 1.048019 = 0.104966.
    low, high = wilson(48, 80)
    assert (low, high) == (pytest.approx(0.490452, abs=5e-6), pytest.approx(0.700384, abs=5e-6))


def test_wilson_stays_inside_zero_and_one_at_the_edges():
    # 0/10: the upper bound is z²/n / (1 + z²/n) = 0.384146 / 1.384146.
    assert wilson(0, 10) == (0.0, pytest.approx(0.277533, abs=5e-6))
    assert wilson(10, 10) == (pytest.approx(0.722467, abs=5e-6), pytest.approx(1.0))
    assert wilson(0, 0) == (0.0, 1.0)


def test_the_difference_interval_is_newcombes_hybrid_score_interval():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, 56/70 - 48/80, method 10: 0.0524 to 0.3339.
    # By hand: 0.2 - √((0.8 - 0.691829)² + (0.700384 - 0.6)²) = 0.2 - √0.021778 = 0.052428, and
    #          0.2 + √((0.876953 - 0.8)² + (0.6 - 0.490452)²) = 0.2 + √0.017922 = 0.333874.
    difference = Difference(a=Rate(48, 80), b=Rate(56, 70))
    assert difference.value == pytest.approx(0.2)
    low, high = difference.interval
    assert (low, high) == (pytest.approx(0.05243, abs=5e-5), pytest.approx(0.33387, abs=5e-5))
    assert not difference.noise


@pytest.mark.parametrize(
    ("a", "b", "noise"),
    [
        (Rate(12, 100), Rate(15, 100), True),  # 3 points apart on 100 each: could be chance
        (Rate(10, 100), Rate(30, 100), False),
        (Rate(30, 100), Rate(10, 100), False),  # lower, beyond noise, is not noise either
        (Rate(120, 1000), Rate(150, 1000), False),  # the same 3 points on ten times the sends
        (Rate(0, 0), Rate(5, 10), True),  # nothing sent on one side: nothing to claim
    ],
)
def test_noise_means_the_interval_of_the_difference_holds_zero(a, b, noise):
    assert Difference(a, b).noise is noise


def test_intervals_read_as_percentages():
    assert (percent(0.12345), percent(None)) == ("12.3%", "\N{EN DASH}")
    assert interval((0.0981, 0.1523)) == "9.8 to 15.2"
    assert interval((-0.05, 0.1)) == "-5.0 to +10.0"


def replied_blast(tag, sent, replied, read=0):
    """A blast of `sent` messages: `replied` replied, `read` more read and no reply."""
    phones = [f"+60129{hash(tag) % 1000:03d}{n:04d}" for n in range(sent)]
    blast = sent_blast(phones)
    blast.tag = tag
    blast.save(update_fields=["tag"])
    for index, recipient in enumerate(blast.recipients.order_by("id")[: replied + read]):
        status = Status.REPLIED if index < replied else Status.READ_ACK
        recipient_advance(recipient=recipient, status=status, source="manual")
    return blast


def test_the_compare_page_says_plainly_when_a_difference_is_beyond_noise_or_not(admin_client):
    replied_blast("Raya", sent=100, replied=10, read=40)
    replied_blast("Merdeka", sent=100, replied=30, read=22)

    page = admin_client.get(reverse("compare"), {"a": "tag:Raya", "b": "tag:Merdeka"}).content.decode()

    rows = {row.split("</th>")[0]: row for row in page.split('<th scope="row">')[1:]}
    assert "The second is higher, beyond noise." in rows["Replied"]
    assert "30.0%" in rows["Replied"] and "20.0% points" in rows["Replied"]
    assert "Within noise: these numbers do not show a real difference." in rows["Read"]  # 50% vs 52%
    assert "Tag: Raya" in page and "100 sent" in page


def test_a_blast_can_be_compared_with_a_tag_or_a_stage(admin_client):
    blast = replied_blast("Raya", sent=20, replied=5)
    make_blast(2, tag="Other", follow_up_stage="Follow-up 1")
    response = admin_client.get(reverse("compare"), {"a": f"blast:{blast.pk}", "b": "stage:Follow-up 1"})
    assert response.status_code == 200
    assert "Nothing sent on one side yet." in response.content.decode()


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"a": "blast:999999", "b": "tag:Raya"}, "Select a valid choice."),
        ({"a": "tag:Raya", "b": "tag:Raya"}, "Choose something else to compare with."),
        ({"a": "tag:Raya"}, "This field is required."),
    ],
)
def test_a_bad_comparison_is_a_form_error(admin_client, query, error):
    replied_blast("Raya", sent=3, replied=1)
    response = admin_client.get(reverse("compare"), query)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert "Verdict" not in response.content.decode()


def test_the_overview_gives_each_reply_rate_its_interval(admin_client):
    replied_blast("Raya", sent=70, replied=56)
    page = admin_client.get(reverse("overview")).content.decode()
    assert "80.0% <small>(69.2 to 87.7)</small>" in page
