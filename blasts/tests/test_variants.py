"""Issue 21, parts 1 and 3: message variants (split, sent, compared with honest verdicts) and varied
wording ({Salam|Hi|Hello}) chosen per recipient, the same on every resend."""

from collections import Counter
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from blasts.gateway.client import get_client
from blasts.models import AuditRecord, Blast, BlastRecipient, StatusHistory, VariantTest
from blasts.recipients import Recipient, attribute_placeholders, messages_preview, spin, wordings
from blasts.reporting.variants import blast_variants
from blasts.sending.ledger import blasts_complete_finished, recipients_claim
from blasts.sending.winner import variant_tests_decide
from blasts.sending.worker import send_due
from blasts.services import recipient_advance
from blasts.variants import HELD, recipient_message, variants_assign

from .conftest import make_blast, new_phone

Status = BlastRecipient.Status


# --- the split ---------------------------------------------------------------------------------


def test_ten_thousand_recipients_split_three_ways_within_one_percent_and_the_same_every_time():
    phones = [f"+6012{n:07d}" for n in range(10_000)]
    split = variants_assign(42, phones, "ABC")
    shares = Counter(split.values())
    assert set(shares) == {"A", "B", "C"}
    assert all(abs(n / 10_000 - 1 / 3) < 0.01 for n in shares.values())
    assert (
        variants_assign(42, list(reversed(phones)), "ABC") == split
    )  # the order they came in does not matter
    other = variants_assign(43, phones, "ABC")
    assert other != split and Counter(other.values()) == shares  # another blast: another draw, as even


def test_the_split_is_random_not_by_position():
    phones = [f"+6012{n:07d}" for n in range(1000)]
    split = variants_assign(7, phones, "AB")
    first_half = Counter(split[phone] for phone in phones[:500])
    assert 200 < first_half["A"] < 300  # dealt in turn from a shuffle: not A for the first half


def test_a_blast_with_variants_gives_each_recipient_one_evenly(db):
    blast = make_blast(30, message="A {name}", variants=["B {name}", "", "C {name}"])
    assert blast.variants == ["B {name}", "C {name}"]  # a blank one is no variant
    assert blast.messages == {"A": "A {name}", "B": "B {name}", "C": "C {name}"}
    shares = Counter(blast.recipients.values_list("variant", flat=True))
    assert shares == {"A": 10, "B": 10, "C": 10}
    assert make_blast(3).recipients.filter(variant="").count() == 3  # none without variants


def test_more_than_five_variants_are_refused(db):
    with pytest.raises(Exception, match="At most 5 variants"):
        make_blast(3, variants=["b", "c", "d", "e", "f"])
    assert not Blast.objects.exists()


def test_each_recipient_is_sent_its_variant(db, gateway):
    blast = make_blast(8, message="Promo A for {first_name}", variants=["Promo B for {first_name}"])
    Blast.objects.filter(pk=blast.pk).update(state=Blast.State.QUEUED)
    send_due(client=get_client(), blast_id=blast.pk)
    sent = {call["to"]: call["message"] for call in gateway.calls if call["outcome"] == "sent"}
    for recipient in blast.recipients.all():
        assert sent[recipient.phone] == f"Promo {recipient.variant} for {recipient.name.split()[0]}"
    assert set(Counter(r.variant for r in blast.recipients.all()).values()) == {4}


# --- the verdicts --------------------------------------------------------------------------------


def _replies(blast, replied: dict[str, int]):
    """Every recipient sent; `replied[letter]` of each variant's replied."""
    for recipient in blast.recipients.order_by("id"):
        status = Status.REPLIED if replied.get(recipient.variant, 0) > 0 else Status.READ_ACK
        replied[recipient.variant] = replied.get(recipient.variant, 0) - 1
        recipient_advance(recipient=recipient.pk, status=status, source=StatusHistory.Source.WEBHOOK)


def test_the_page_shows_each_variants_funnel_with_intervals_and_a_plain_verdict(db, admin_client):
    blast = make_blast(400, message="Plain", variants=["Better", "Same"])
    _replies(blast, {"A": 20, "B": 60, "C": 22})  # of about 133 each
    results = {v.letter: v for v in blast_variants(blast)}
    assert results["A"].against_a == []
    (replied_b, _), (replied_c, _) = results["B"].against_a, results["C"].against_a
    assert (
        replied_b[0] == "replied" and not replied_b[1].noise and replied_b[2] == "B is higher, beyond noise."
    )
    assert replied_c[1].noise and replied_c[2].startswith("Within noise")

    page = admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()
    assert 'id="variant-B"' in page and "B is higher, beyond noise." in page and "Within noise" in page
    assert (
        f"{results['B'].funnel.replied} · {100 * results['B'].funnel.replied / results['B'].funnel.sent:.1f}%"
        in page
    )


def test_a_blast_without_variants_shows_no_variants_table(db, admin_client):
    blast = make_blast(3)
    assert blast_variants(blast) == []
    assert 'id="variants"' not in admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()


def test_the_compare_page_keeps_its_words():
    from blasts.reporting.stats import Difference, Rate, verdict

    assert verdict(Difference(Rate(10, 100), Rate(40, 100)), "The first", "The second") == (
        "The second is higher, beyond noise."
    )
    assert verdict(Difference(Rate(40, 100), Rate(10, 100)), "A", "B") == "A is higher, beyond noise."
    assert verdict(Difference(Rate(0, 0), Rate(1, 2)), "A", "B") == "Nothing sent on one side yet."


# --- the form, the admin and the API -------------------------------------------------------------


FORM = {
    "tag": "Raya",
    "follow_up_stage": "Initial",
    "message": "Salam {first_name|Tuan/Puan}!",
    "device": "5850",
}


def test_the_new_blast_page_takes_variants_and_previews_each(admin_client):
    lines = "\n".join(new_phone() for _ in range(6))
    data = {
        **FORM,
        "variant_b": "Hai {first_name|Tuan/Puan}, {Diskaun|Promo} hari ini",
        "recipients_text": lines,
    }
    preview = admin_client.post(reverse("blast-new"), {**data, "preview": "1"})
    assert preview.status_code == 200
    assert [(letter, count) for letter, _, count in preview.context["previews"]] == [("A", 3), ("B", 3)]
    assert sum(n for _, text_count in preview.context["previews"][1][1].texts for n in [text_count]) == 3
    assert 'id="preview-B"' in preview.content.decode()

    admin_client.post(reverse("blast-new"), {**data, "create": "1"})
    blast = Blast.objects.get()
    assert blast.variants == ["Hai {first_name|Tuan/Puan}, {Diskaun|Promo} hari ini"]
    assert Counter(blast.recipients.values_list("variant", flat=True)) == {"A": 3, "B": 3}


def test_a_variant_with_a_placeholder_nobody_has_is_a_form_error_on_that_variant(admin_client):
    data = {**FORM, "variant_c": "Hai {nmae}", "recipients_text": new_phone(), "create": "1"}
    response = admin_client.post(reverse("blast-new"), data)
    assert "No recipient has {nmae}" in str(response.context["form"].errors["variant_c"])
    assert not Blast.objects.exists()


def test_the_admin_creates_a_blast_with_variants(admin_client, settings):
    data = {
        **FORM,
        "variant_b": "Other",
        "recipients_text": f"{new_phone()}\n{new_phone()}",
        "track_links": "on",
    }
    response = admin_client.post(f"/{settings.ADMIN_PATH}blasts/blast/add/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    blast = Blast.objects.get()
    assert blast.messages == {"A": FORM["message"], "B": "Other"}
    page = admin_client.get(f"/{settings.ADMIN_PATH}blasts/blast/{blast.pk}/change/").content.decode()
    assert "<strong>B</strong> Other" in page


def test_the_api_creates_variants_and_refuses_too_many(admin_client):
    body = {"blast_tag": "Raya", "message": "A", "recipients": [new_phone() for _ in range(4)]}
    created = admin_client.post("/api/blasts/", {**body, "variants": ["B"]}, content_type="application/json")
    assert created.status_code == 201, created.content
    blast = Blast.objects.get(pk=created.json()["blast_id"])
    assert blast.variants == ["B"]
    shown = admin_client.get(f"/api/blasts/{blast.pk}/").json()
    assert shown["variants"] == ["B"] and shown["track_links"] is True

    too_many = admin_client.post(
        "/api/blasts/", {**body, "variants": list("BCDEF")}, content_type="application/json"
    )
    assert too_many.status_code == 400 and "variants" in too_many.json()
    assert Blast.objects.count() == 1


# --- varied wording ------------------------------------------------------------------------------


def test_a_choice_is_made_per_recipient_and_is_the_same_every_time():
    template = "{Salam|Hi|Hello} {first_name|Tuan/Puan}, {our promo|the sale} ends {Today|tonight}!"
    phones = [f"+6012{n:07d}" for n in range(300)]
    texts = [spin(template, phone) for phone in phones]
    assert texts == [spin(template, phone) for phone in phones]  # a resend says the same
    greetings = Counter(text.split()[0] for text in texts)
    assert set(greetings) == {"Salam", "Hi", "Hello"} and min(greetings.values()) > 60
    assert all("{first_name|Tuan/Puan}" in text for text in texts)  # a placeholder, not a choice
    assert wordings(template) == 12 and len(set(texts)) == 12


@pytest.mark.parametrize(
    ("template", "count"),
    [
        ("No choice here", 1),
        ("{Hi|Hello} {name}", 2),
        ("{city|your area}", 1),  # an attribute with its fallback
        ("{Hi|hello}", 2),  # a capital makes two words a choice
        ("{Hi {Ali|Abu}|Hello}", 3),  # choices inside choices
        ("{Hi {first_name|Tuan}|Hello}!", 2),  # a placeholder inside a choice
        ("{a|b|c}", 3),
    ],
)
def test_how_many_texts_a_message_can_make(template, count):
    assert wordings(template) == count
    assert len({spin(template, f"+6012{n:07d}") for n in range(200)}) == count


def test_a_choice_is_not_taken_for_an_attribute_and_a_typo_still_is():
    assert attribute_placeholders("{Salam|Hi} {city|kedai} {Ali|Abu|Ahmad}") == ["city"]
    assert attribute_placeholders("Di {City}") == ["City"]  # no bar: a placeholder, refused if nobody has it


def test_two_lowercase_words_read_as_a_placeholder_and_the_error_says_how_to_make_a_choice(db):
    with pytest.raises(Exception, match=r"No recipient has \{today\}.*\{Today\|tonight\}"):
        make_blast(2, message="Ends {today|tonight}")


def test_placeholders_inside_a_choice_are_filled_in():
    recipient = Recipient("+60123456789", "Aisyah Rahman")
    texts = {messages_preview("{Hi {first_name}|Salam {first_name}}!", [recipient]).texts[0][0]}
    assert texts <= {"Hi Aisyah!", "Salam Aisyah!"}


def test_the_preview_says_how_many_wordings_and_how_many_go_out():
    recipients = [Recipient(f"+6012{n:07d}", "") for n in range(50)]
    preview = messages_preview("{Salam|Hi|Hello} {first_name|Tuan/Puan}", recipients)
    assert preview.wordings == 3 and preview.worded == 3
    assert sorted(text for text, _ in preview.texts) == ["Hello Tuan/Puan", "Hi Tuan/Puan", "Salam Tuan/Puan"]
    assert sum(count for _, count in preview.texts) == 50


def test_the_sender_sends_the_recipients_wording(db):
    blast = make_blast(20, message="{Salam|Hi|Hello} {first_name}")
    for recipient in blast.recipients.select_related("blast", "contact"):
        text = recipient_message(recipient)
        assert text == f"{spin(blast.message, recipient.phone).split()[0]} {recipient.name.split()[0]}"
    assert (
        len({recipient_message(r).split()[0] for r in blast.recipients.select_related("blast", "contact")})
        > 1
    )


# --- test then send the winner -------------------------------------------------------------------


def blast_with_test(recipients=100, share=20, wait=timedelta(hours=4), metric="replied", **fields):
    test = VariantTest(share=share, wait=wait, metric=metric)
    return make_blast(recipients, message="Plain A", variants=["Better B"], test=test, **fields)


def _sent_with_replies(blast, replied: dict[str, int]):
    """The test's recipients sent (read), `replied[letter]` of each variant's replied."""
    for recipient in blast.recipients.exclude(variant="").order_by("id"):
        left = replied.get(recipient.variant, 0)
        replied[recipient.variant] = left - 1
        status = Status.REPLIED if left > 0 else Status.READ_ACK
        recipient_advance(recipient=recipient.pk, status=status, source=StatusHistory.Source.WEBHOOK)


def test_a_test_splits_only_its_share_and_holds_the_rest_back_from_the_sender(db):
    blast = blast_with_test(100, share=20)
    assert Counter(blast.recipients.values_list("variant", flat=True)) == {"": 80, "A": 10, "B": 10}
    assert blast.recipients.filter(variant="", next_attempt_at=HELD).count() == 80
    Blast.objects.filter(pk=blast.pk).update(state=Blast.State.QUEUED)
    claimed = recipients_claim(worker="w", limit=1000, now=timezone.now())
    assert sorted(claimed) == sorted(blast.recipients.exclude(variant="").values_list("pk", flat=True))
    assert blasts_complete_finished(now=timezone.now()) == 0  # the held are still to send


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"variants": []}, "at least two variants"),
        ({"test": VariantTest(share=5, wait=timedelta(hours=1))}, "10% to 50%"),
        ({"test": VariantTest(share=20, wait=timedelta(0))}, "Wait some time"),
    ],
)
def test_a_test_that_cannot_run_is_refused(db, change, error):
    fields = {
        "message": "A",
        "variants": ["B"],
        "test": VariantTest(share=20, wait=timedelta(hours=1)),
        **change,
    }
    with pytest.raises(ValidationError, match=error):
        make_blast(10, **fields)
    assert not Blast.objects.exists()


def test_the_wait_starts_when_the_tests_sends_are_done_and_the_winner_takes_the_rest(db, admin_client):
    blast = blast_with_test(400, share=50, wait=timedelta(hours=4))
    Blast.objects.filter(pk=blast.pk).update(state=Blast.State.SENDING)
    start = timezone.now()
    assert variant_tests_decide(now=start) == 0
    assert VariantTest.objects.get().ends_at is None  # the test's sends are not done
    _sent_with_replies(blast, {"A": 15, "B": 60})
    variant_tests_decide(now=start)
    test = VariantTest.objects.get()
    assert test.ends_at == start + timedelta(hours=4) and test.decided_at is None
    page = admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()
    assert "the other 200 get that variant" in page

    assert variant_tests_decide(now=start + timedelta(hours=3)) == 0  # still waiting
    assert variant_tests_decide(now=start + timedelta(hours=4)) == 1
    test = VariantTest.objects.get()
    assert test.winner == "B" and test.verdict.startswith("B won: its reply rate was higher")
    assert "The other 200 recipients get B." in test.verdict
    assert Counter(blast.recipients.values_list("variant", flat=True)) == {"A": 100, "B": 300}
    assert not blast.recipients.filter(next_attempt_at=HELD).exists()
    assert AuditRecord.objects.filter(blast=blast, action=AuditRecord.Action.TEST_DECIDED).exists()
    page = admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()
    assert "Winner: B." in page and "beyond noise" in page
    shown = admin_client.get(f"/api/blasts/{blast.pk}/").json()["variant_test"]
    assert shown["winner"] == "B" and shown["share"] == 50 and shown["wait_hours"] == 4


def test_an_inconclusive_test_splits_the_rest_evenly_and_says_so(db):
    blast = blast_with_test(400, share=50, wait=timedelta(minutes=1))
    Blast.objects.filter(pk=blast.pk).update(state=Blast.State.SENDING)
    _sent_with_replies(blast, {"A": 30, "B": 34})
    now = timezone.now()
    variant_tests_decide(now=now)
    assert variant_tests_decide(now=now + timedelta(minutes=1)) == 1
    test = VariantTest.objects.get()
    assert test.winner == "" and test.verdict.startswith("Inconclusive")
    held = Counter(blast.recipients.filter(status=Status.QUEUED).values_list("variant", flat=True))
    assert held == {"A": 100, "B": 100}


def test_a_paused_blasts_test_waits_and_a_decided_one_is_never_decided_again(db):
    blast = blast_with_test(40, share=50, wait=timedelta(minutes=1))
    _sent_with_replies(blast, {"A": 0, "B": 20})
    later = timezone.now() + timedelta(hours=1)
    assert variant_tests_decide(now=later) == 0  # a draft: nothing is decided for it
    Blast.objects.filter(pk=blast.pk).update(state=Blast.State.SENDING)
    variant_tests_decide(now=later)
    assert variant_tests_decide(now=later + timedelta(minutes=1)) == 1
    assert variant_tests_decide(now=later + timedelta(hours=1)) == 0
    assert VariantTest.objects.get().winner == "B"


def test_the_form_and_the_api_make_a_test(admin_client):
    lines = "\n".join(new_phone() for _ in range(10))
    data = {**FORM, "variant_b": "Other", "recipients_text": lines, "test_share": "20", "test_hours": "2"}
    admin_client.post(reverse("blast-new"), {**data, "test_metric": "clicked", "create": "1"})
    test = VariantTest.objects.get()
    assert (test.share, test.wait, test.metric) == (20, timedelta(hours=2), "clicked")

    preview = admin_client.post(reverse("blast-new"), {**data, "preview": "1"})
    assert [count for _, _, count in preview.context["previews"]] == [1, 1] and preview.context["held"] == 8
    assert "2 are tested first and the other 8 wait for the winner" in preview.content.decode()

    no_variant = admin_client.post(reverse("blast-new"), {**data, "variant_b": "", "create": "1"})
    assert "at least two variants" in str(no_variant.context["form"].errors)

    body = {
        "blast_tag": "Raya",
        "message": "A",
        "variants": ["B"],
        "recipients": [new_phone() for _ in range(10)],
    }
    created = admin_client.post(
        "/api/blasts/", {**body, "test_share": 30, "test_hours": 0.5}, content_type="application/json"
    )
    assert created.status_code == 201, created.content
    assert created.json()["blast_id"] and VariantTest.objects.count() == 2
    refused = admin_client.post(
        "/api/blasts/", {**body, "variants": [], "test_share": 30}, content_type="application/json"
    )
    assert refused.status_code == 400 and "test_share" in refused.json()


def test_a_recipients_page_names_its_variant_and_the_text_it_is_sent(db, admin_client):
    blast = make_blast(4, message="{Salam|Hi} {first_name} (A)", variants=["Hello {first_name} (B)"])
    for recipient in blast.recipients.select_related("blast", "contact"):
        page = admin_client.get(reverse("recipient-detail", args=[blast.pk, recipient.pk])).content.decode()
        assert f"Variant <strong>{recipient.variant}</strong>" in page
        assert recipient_message(recipient) in page and f"({recipient.variant})" in recipient_message(
            recipient
        )


def test_the_api_metrics_the_page_and_the_csv_agree_on_each_variant(db, admin_client):
    import csv
    import io

    blast = make_blast(90, message="Plain", variants=["Better", "Other"])
    _replies(blast, {"A": 5, "B": 25, "C": 8})
    clicked = blast.recipients.filter(variant="B").order_by("id")[:7]
    BlastRecipient.objects.filter(pk__in=[r.pk for r in clicked]).update(clicked_at=timezone.now())

    metrics = admin_client.get(f"/api/blasts/{blast.pk}/metrics/").json()
    shown = {row["variant"]: row for row in metrics["variants"]}
    assert admin_client.get(f"/api/blasts/{blast.pk}/").json()["metrics"]["variants"] == metrics["variants"]
    assert "variants" not in admin_client.get("/api/blasts/").json()["results"][0]["metrics"]
    rows = list(
        csv.DictReader(
            io.StringIO(
                b"".join(
                    admin_client.get(reverse("blast-recipients-csv", args=[blast.pk])).streaming_content
                ).decode()
            )
        )
    )
    page = admin_client.get(reverse("blast-detail", args=[blast.pk])).content.decode()
    for result in blast_variants(blast):
        row = shown[result.letter]
        mine = [r for r in rows if r["variant"] == result.letter]
        assert row["sent"] == result.funnel.sent == len(mine)
        assert row["replied"] == result.funnel.replied == sum(r["status_code"] == "REPLIED" for r in mine)
        assert row["clicked"] == result.clicks.clicked == sum(bool(r["clicked_at"]) for r in mine)
        assert (
            f'<td data-label="Replied">{row["replied"]} · ' in page
            and f'<td data-label="Clicked">{row["clicked"]} · ' in page
        )
    assert shown["B"]["clicked"] == 7 and shown["B"]["against_a"]["clicked"]["beyond_noise"] is True
    assert shown["B"]["against_a"]["replied"]["verdict"] == "B is higher, beyond noise."
    assert shown["A"]["against_a"] == {}
