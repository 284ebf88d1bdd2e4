"""Segments (issue 19, item 4): what each rule means, one query to count, a blast made from a segment
is a snapshot that the sender checks again, and the segment pages."""

from collections import Counter
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from blasts.audit import SYSTEM
from blasts.contacts.book import ContactIn, contacts_upsert
from blasts.gateway.client import get_client
from blasts.lifecycle import blast_queue
from blasts.models import AuditRecord, Blast, BlastRecipient, Contact, OptOut, Segment
from blasts.segments import selectors
from blasts.segments.rules import rule_words, rules_clean, segment_members
from blasts.segments.services import blast_create_from_segment, segment_delete, segment_save
from blasts.sending.worker import send_due
from blasts.statuses import STAGE_TIME_FIELDS

from .conftest import make_blast, new_phone
from .test_access import login

Status = BlastRecipient.Status
Did = AuditRecord.Action
VIP = {"kind": "tag", "op": "is", "value": "VIP"}


def person(name: str, tags=(), **attributes) -> Contact:
    """A contact made the way every path makes one (contacts_upsert)."""
    phone = new_phone()
    ids = contacts_upsert([ContactIn(phone, name, attributes, list(tags))]).ids
    return Contact.objects.get(pk=ids[phone])


def messaged(contact, *, tag="Launch", stage="Initial", status=Status.PENDING, days_ago=1) -> BlastRecipient:
    """The contact was in a blast `days_ago` days ago and went as far as `status` (every stage then)."""
    blast = Blast.objects.create(
        tag=tag, follow_up_stage=stage, message="Hi", device="5850", state=Blast.State.COMPLETED
    )
    at = timezone.now() - timedelta(days=days_ago)
    times = {field: at for floor, field in STAGE_TIME_FIELDS if status >= floor}
    return BlastRecipient.objects.create(
        blast=blast, contact=contact, phone=contact.phone, status=status, **times
    )


def members(*rules, match="all") -> set[str]:
    return set(segment_members(match, rules_clean(list(rules))).values_list("name", flat=True))


def saved(name="VIPs", rules=(VIP,), match="all") -> Segment:
    return segment_save(segment=Segment(name=name, match=match, rules=list(rules)), by=SYSTEM)


# --- what each rule means -------------------------------------------------------------------------


def test_tag_is_and_is_not(db):
    person("Vip", tags=["VIP", "Lead"]), person("Lead", tags=["Lead"]), person("Untagged")

    assert members(VIP) == {"Vip"}
    assert members({"kind": "tag", "op": "is_not", "value": "VIP"}) == {"Lead", "Untagged"}


def test_attribute_equals_ignores_case_contains_finds_a_part_and_is_empty_finds_none(db):
    person("Ipoh", city="Ipoh"), person("KL", city="Kuala Lumpur"), person("Nowhere", product="Shoes")

    def attribute(op, value=""):
        return members({"kind": "attribute", "op": op, "key": "city", "value": value})

    assert attribute("equals", "IPOH") == {"Ipoh"}
    assert attribute("equals", "Ipo") == set()
    assert attribute("contains", "lumpur") == {"KL"}
    assert attribute("contains", "%") == set()  # a wildcard is a character like any other
    assert attribute("is_empty") == {"Nowhere"}


def test_an_attribute_key_that_looks_like_a_number_or_a_lookup_is_still_a_key(db):
    person("Year", **{"2024": "yes"}), person("Lookup", contains="yes"), person("Neither")

    assert members({"kind": "attribute", "op": "equals", "key": "2024", "value": "yes"}) == {"Year"}
    assert members({"kind": "attribute", "op": "equals", "key": "contains", "value": "YES"}) == {"Lookup"}
    assert members({"kind": "attribute", "op": "is_empty", "key": "contains"}) == {"Year", "Neither"}


def test_reached_a_stage_in_blasts_with_a_tag_on_a_follow_up_stage_in_the_last_days(db):
    messaged(person("Read Raya"), tag="Raya", status=Status.READ_ACK, days_ago=5)
    messaged(person("Read Raya long ago"), tag="Raya", status=Status.READ_ACK, days_ago=40)
    messaged(person("Delivered Raya"), tag="Raya", status=Status.DELIVERY_ACK, days_ago=5)
    messaged(
        person("Replied follow-up"), tag="Launch", stage="Follow-up 1", status=Status.REPLIED, days_ago=5
    )
    late = messaged(person("Sent long ago, read lately"), tag="Launch", status=Status.READ_ACK, days_ago=40)
    late.read_at = timezone.now() - timedelta(days=2)
    late.save()
    person("Never messaged")

    def reached(**rule):
        return members({"kind": "reached", "stage": "read", **rule})

    assert reached() == {"Read Raya", "Read Raya long ago", "Replied follow-up", "Sent long ago, read lately"}
    assert reached(tag="raya") == {"Read Raya", "Read Raya long ago"}  # a blast's tag in any case
    assert reached(tag="Raya", days=30) == {"Read Raya"}
    assert reached(days=30) == {"Read Raya", "Replied follow-up", "Sent long ago, read lately"}  # when read
    assert reached(follow_up_stage="follow-up 1") == {"Replied follow-up"}
    assert members({"kind": "reached", "stage": "sent", "days": 30}) == {
        "Read Raya", "Delivered Raya", "Replied follow-up",
    }  # fmt: skip
    assert members({"kind": "reached", "stage": "received", "tag": "Raya"}) == {
        "Read Raya", "Read Raya long ago", "Delivered Raya",
    }  # fmt: skip


def test_never_reached_a_stage_includes_those_never_messaged(db):
    messaged(person("Replied"), tag="Raya", status=Status.REPLIED)
    messaged(person("Read"), tag="Raya", status=Status.READ_ACK)
    messaged(person("Replied elsewhere"), tag="Launch", status=Status.REPLIED)
    person("Never messaged")

    assert members({"kind": "not_reached", "stage": "replied"}) == {"Read", "Never messaged"}
    assert members({"kind": "not_reached", "stage": "replied", "tag": "Raya"}) == {
        "Read", "Replied elsewhere", "Never messaged",
    }  # fmt: skip


def test_never_messaged_counts_only_messages_that_were_sent(db):
    messaged(person("Sent"), status=Status.PENDING)
    for status in (Status.QUEUED, Status.SKIPPED, Status.FAILED):
        messaged(person(f"Only {status.label.lower()}"), status=status)
    person("Nothing at all")

    assert members({"kind": "never_messaged"}) == {
        "Only queued",
        "Only skipped",
        "Only failed",
        "Nothing at all",
    }


def test_messaged_fewer_than_k_times_in_n_days_counts_only_sent_messages_in_the_window(db):
    twice, thrice, long_ago, tries = (
        person("Twice"),
        person("Thrice"),
        person("Thrice long ago"),
        person("Tries"),
    )
    for contact, times, days_ago in ((twice, 2, 3), (thrice, 3, 3), (long_ago, 3, 40), (tries, 2, 3)):
        for _ in range(times):
            messaged(contact, days_ago=days_ago)
    for status in (Status.QUEUED, Status.SKIPPED, Status.FAILED):  # not sent: not counted
        messaged(tries, status=status)
    sent_then_failed = BlastRecipient.objects.filter(contact=tries, status=Status.FAILED)
    sent_then_failed.update(sent_at=timezone.now())  # the gateway took it, then said ERROR
    person("Never")

    assert members({"kind": "messaged_fewer", "times": 3, "days": 30}) == {
        "Twice",
        "Thrice long ago",
        "Tries",
        "Never",
    }
    assert members({"kind": "messaged_fewer", "times": 2, "days": 30}) == {"Thrice long ago", "Never"}
    assert members({"kind": "messaged_fewer", "times": 3, "days": 60}) == {"Twice", "Tries", "Never"}


def test_all_needs_every_rule_and_any_needs_one(db):
    person("VIP in Ipoh", tags=["VIP"], city="Ipoh"), person("VIP elsewhere", tags=["VIP"], city="Kuantan")
    person("Ipoh only", city="Ipoh"), person("Neither")
    ipoh = {"kind": "attribute", "op": "equals", "key": "city", "value": "ipoh"}

    assert members(VIP, ipoh, match="all") == {"VIP in Ipoh"}
    assert members(VIP, ipoh, match="any") == {"VIP in Ipoh", "VIP elsewhere", "Ipoh only"}
    assert (
        members(match="any")
        == members(match="all")
        == {"VIP in Ipoh", "VIP elsewhere", "Ipoh only", "Neither"}
    )


def test_opted_out_contacts_are_never_members_whatever_the_rules(db):
    opted = person("Opted out", tags=["VIP"])
    person("Stays", tags=["VIP"])
    OptOut.objects.create(phone=opted.phone, reason="STOP")

    assert members() == {"Stays"}
    assert members(VIP) == {"Stays"}
    assert members(VIP, {"kind": "never_messaged"}, match="any") == {"Stays"}
    assert members({"kind": "tag", "op": "is_not", "value": "Nothing"}) == {"Stays"}


def test_canary_phones_are_never_members(db, settings):
    settings.CANARY_PHONES = [new_phone()]
    blast = make_blast(2, status=Status.READ_ACK)  # the canary read it too
    assert blast.recipients.filter(is_canary=True, contact=None, status=Status.READ_ACK).count() == 1

    chosen = segment_members(
        "any", rules_clean([{"kind": "reached", "stage": "read"}, {"kind": "never_messaged"}])
    )

    assert set(chosen.values_list("phone", flat=True)) == set(
        blast.recipients.filter(is_canary=False).values_list("phone", flat=True)
    )
    assert settings.CANARY_PHONES[0] not in set(segment_members("all", []).values_list("phone", flat=True))


@pytest.mark.parametrize("match", ["all", "any"])
def test_counting_a_segment_is_one_query_whatever_its_rules(db, django_assert_num_queries, match):
    messaged(person("Read Raya", tags=["VIP"], city="Ipoh"), tag="Raya", status=Status.READ_ACK)
    person("Quiet", city="Ipoh")
    rules = rules_clean([
        VIP,
        {"kind": "tag", "op": "is_not", "value": "Lead"},
        {"kind": "attribute", "op": "equals", "key": "city", "value": "Ipoh"},
        {"kind": "attribute", "op": "contains", "key": "city", "value": "po"},
        {"kind": "attribute", "op": "is_empty", "key": "product"},
        {"kind": "reached", "stage": "read", "tag": "Raya", "follow_up_stage": "Initial", "days": 30},
        {"kind": "not_reached", "stage": "replied", "days": 7},
        {"kind": "never_messaged"},
        {"kind": "messaged_fewer", "times": 3, "days": 30},
        {"kind": "messaged_fewer", "times": 9, "days": 365},
    ])  # fmt: skip

    with django_assert_num_queries(1):
        count = segment_members(match, rules).count()

    assert count == (0 if match == "all" else 2)


@pytest.mark.parametrize("few", [0, 2000])  # read all the members, or ask for the latest
def test_the_sample_is_the_members_seen_most_recently_with_their_tags(db, monkeypatch, few):
    monkeypatch.setattr(selectors, "FEW", few)
    now = timezone.now()
    for n in range(25):
        contact = person(f"Vip {n}", tags=["VIP", f"Tag {n}"])
        Contact.objects.filter(pk=contact.pk).update(last_seen_at=now - timedelta(days=n))
    person("Not a VIP")
    rules = rules_clean([VIP])

    sample = selectors.segment_sample("all", rules, count=25, size=3)

    assert [(c.name, sorted(t.name for t in c.tags.all())) for c in sample] == [
        ("Vip 0", ["Tag 0", "VIP"]), ("Vip 1", ["Tag 1", "VIP"]), ("Vip 2", ["Tag 2", "VIP"]),
    ]  # fmt: skip


def test_an_empty_segment_samples_nobody_without_asking(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert selectors.segment_sample("all", rules_clean([VIP]), count=0) == []


# --- rules checked and in words -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("VIP", "The rules are a list."),
        ([VIP] * 21, "At most 20 rules."),
        ([["tag"]], "Rule 1: a rule is an object with a kind."),
        ([{"kind": ["tag"]}], "Rule 1: kind must be one of tag, attribute, reached"),
        ([{"kind": "tag", "op": "is"}], "Rule 1: give the value."),
        ([VIP, {"kind": "reached", "stage": {"read": 1}}], "Rule 2: stage must be one of sent, received"),
        (
            [{"kind": "attribute", "op": "matches", "key": "city", "value": "x"}],
            "Rule 1: op must be one of equals",
        ),
        (
            [{"kind": "attribute", "op": "equals", "key": "!!!", "value": "x"}],
            "Rule 1: the key must have a letter",
        ),
        ([{"kind": "tag", "op": "is", "value": "V\x00IP"}], "Rule 1: value must be a text of at most 200"),
        ([{"kind": "tag", "op": "is", "value": "x" * 201}], "Rule 1: value must be a text of at most 200"),
        (
            [{"kind": "reached", "stage": "read", "days": "9" * 5000}],
            "Rule 1: days must be a whole number from 1",
        ),
        ([{"kind": "reached", "stage": "read", "days": True}], "Rule 1: days must be a whole number"),
        (
            [{"kind": "messaged_fewer", "times": 0, "days": 30}],
            "Rule 1: times must be a whole number from 1 to",
        ),
        ([{"kind": "messaged_fewer", "times": 3}], "Rule 1: days must be a whole number from 1 to 3650."),
    ],
)
def test_wrong_rules_are_refused_naming_the_rule_and_what_is_wrong(rules, message):
    with pytest.raises(ValidationError) as refused:
        rules_clean(rules)
    assert any(text.startswith(message) for text in refused.value.messages), refused.value.messages


def test_rules_are_stored_in_their_own_shape(db):
    clean = rules_clean([
        {"kind": "tag", "op": "is", "value": "  VIP ", "days": 3, "extra": "dropped"},
        {"kind": "attribute", "op": "is_empty", "key": "Last Order", "value": "ignored"},
        {"kind": "reached", "stage": "read", "days": "30", "tag": None},
        {"kind": "messaged_fewer", "times": "3", "days": 7},
        {"kind": "tag", "op": "is", "value": "lone \ud800 surrogate"},
    ])  # fmt: skip

    assert clean == [
        {"kind": "tag", "op": "is", "value": "VIP"},
        {"kind": "attribute", "op": "is_empty", "key": "last_order", "value": ""},
        {"kind": "reached", "stage": "read", "tag": "", "follow_up_stage": "", "days": 30},
        {"kind": "messaged_fewer", "times": 3, "days": 7},
        {"kind": "tag", "op": "is", "value": "lone \ufffd surrogate"},
    ]


def test_each_rule_reads_as_a_sentence():
    words = [rule_words(rule) for rule in rules_clean([
        VIP,
        {"kind": "tag", "op": "is_not", "value": "Lead"},
        {"kind": "attribute", "op": "contains", "key": "city", "value": "Ipoh"},
        {"kind": "attribute", "op": "is_empty", "key": "city"},
        {"kind": "reached", "stage": "read", "tag": "Raya", "follow_up_stage": "Initial", "days": 30},
        {"kind": "not_reached", "stage": "replied"},
        {"kind": "never_messaged"},
        {"kind": "messaged_fewer", "times": 3, "days": 30},
    ])]  # fmt: skip

    assert words == [
        "Tag is “VIP”",
        "Tag is not “Lead”",
        "city contains “Ipoh”",
        "city is empty",
        "Reached read in a blast tagged “Raya” on the stage “Initial” in the last 30 days",
        "Never reached replied",
        "Never messaged",
        "Messaged fewer than 3 times in the last 30 days",
    ]


def test_a_segment_with_any_unicode_is_stored_and_counted(db):
    person("Zoë 🌸", tags=["VIP 🌸"], city="Zürich")
    segment = saved(
        name="Pelanggan 🌸 \ud800 setia",
        rules=[
            {"kind": "tag", "op": "is", "value": "VIP 🌸"},
            {"kind": "attribute", "op": "equals", "key": "city", "value": "ZÜRICH"},
            {"kind": "attribute", "op": "contains", "key": "cïty_ñ", "value": "\ud83d"},
        ],
        match="any",
    )
    segment.refresh_from_db()

    assert segment.name == "Pelanggan 🌸 \ufffd setia"
    assert segment_members(segment.match, segment.rules).count() == 1


def test_saving_and_deleting_a_segment_leave_audit_rows(db):
    segment = saved(rules=[VIP, {"kind": "never_messaged"}])
    segment.rules = [{"kind": "never_messaged"}]
    segment_save(segment=segment, by=SYSTEM)
    segment_delete(segment=segment, by=SYSTEM)

    rows = list(AuditRecord.objects.order_by("id").values_list("action", "about", "detail"))
    assert rows[0] == (
        Did.SEGMENT_SAVED,
        "segment VIPs",
        {"match": "all", "rules": [VIP, {"kind": "never_messaged"}]},
    )
    assert [row[0] for row in rows] == [Did.SEGMENT_SAVED, Did.SEGMENT_SAVED, Did.SEGMENT_DELETED]
    assert not Segment.objects.exists()


def test_a_wrong_rule_saves_nothing(db):
    with pytest.raises(ValidationError, match="Rule 2"):
        saved(rules=[VIP, {"kind": "tag"}])
    assert not Segment.objects.exists() and not AuditRecord.objects.exists()


# --- a blast from a segment: a snapshot, checked again at send time -------------------------------


def test_a_blast_from_a_segment_is_a_snapshot_that_later_changes_leave_alone(db):
    first, second, other = person("First", tags=["VIP"]), person("Second", tags=["VIP"]), person("Other")
    segment = saved()
    created = blast_create_from_segment(
        segment=segment, tag="Raya", message="Hi {name}", device="5850", by=SYSTEM
    )
    recipients = set(created.blast.recipients.values_list("phone", "name", "contact_id"))
    assert recipients == {(c.phone, c.name, c.pk) for c in (first, second)}
    assert (created.created, created.blast.segment, created.blast.state) == (2, segment, Blast.State.DRAFT)

    contacts_upsert([ContactIn(other.phone, "Other", {}, ["VIP"])])  # a contact gets the tag
    first.tags.clear()  # another loses it
    person("Newcomer", tags=["VIP"])  # a new contact matches
    segment.rules = [{"kind": "tag", "op": "is_not", "value": "VIP"}]  # and the rules change
    segment_save(segment=segment, by=SYSTEM)

    assert set(created.blast.recipients.values_list("phone", "name", "contact_id")) == recipients
    assert members(*segment.rules) == {"First"}


def test_a_blast_from_an_empty_segment_is_refused_and_makes_nothing(db):
    segment = saved()
    with pytest.raises(ValidationError, match="has no members now"):
        blast_create_from_segment(segment=segment, tag="Raya", message="Hi", device="5850", by=SYSTEM)
    assert not Blast.objects.exists()


def test_a_blast_from_a_segment_refuses_a_placeholder_no_member_has(db):
    person("Vip", tags=["VIP"], city="Ipoh")
    segment = saved()
    with pytest.raises(ValidationError) as refused:
        blast_create_from_segment(
            segment=segment, tag="Raya", message="Hi {product}", device="5850", by=SYSTEM
        )
    assert "{product}" in refused.value.message_dict["message"][0]
    assert not Blast.objects.exists()
    created = blast_create_from_segment(
        segment=segment, tag="Raya", message="Hi {city}", device="5850", by=SYSTEM
    )
    assert created.created == 1


def test_a_member_who_opts_out_after_the_blast_was_made_is_skipped_at_send_time(gateway):
    stays, leaves = person("Stays", tags=["VIP"]), person("Leaves", tags=["VIP"])
    blast = blast_create_from_segment(
        segment=saved(), tag="Raya", message="Hi", device="sandbox", by=SYSTEM
    ).blast
    OptOut.objects.create(phone=leaves.phone, reason="STOP")
    blast_queue(blast=blast)

    tally = send_due(client=get_client(), blast_id=blast.pk)

    assert (tally["sent"], tally["skipped"]) == (1, 1)
    assert dict(blast.recipients.values_list("phone", "failure_reason")) == {
        stays.phone: "",
        leaves.phone: "Opted out",
    }
    assert Counter(call["phone"] for call in gateway.calls) == {stays.phone.lstrip("+"): 1}


def test_a_member_messaged_since_the_blast_was_made_is_skipped_by_the_frequency_cap(gateway, settings):
    settings.FREQUENCY_CAP_DAYS = 3
    quiet, busy = person("Quiet", tags=["VIP"]), person("Busy", tags=["VIP"])
    blast = blast_create_from_segment(
        segment=saved(), tag="Raya", message="Hi", device="sandbox", by=SYSTEM
    ).blast
    messaged(busy, tag="Flash sale", days_ago=0)  # another blast reached them meanwhile
    blast_queue(blast=blast)

    tally = send_due(client=get_client(), blast_id=blast.pk)

    assert (tally["sent"], tally["skipped"]) == (1, 1)
    reasons = dict(blast.recipients.values_list("phone", "failure_reason"))
    assert reasons[quiet.phone] == "" and reasons[busy.phone].endswith("(frequency cap 3 days)")


# --- the pages ------------------------------------------------------------------------------------


def queries(client, url, django_assert_num_queries, expected: int, method="get", data=None):
    with django_assert_num_queries(expected):
        response = getattr(client, method)(url, data or {})
    return response


def test_the_list_shows_each_segments_rules_live_count_and_blasts_in_a_fixed_number_of_queries(
    admin_client, django_assert_num_queries
):
    person("Vip", tags=["VIP"]), person("Vip too", tags=["VIP"]), person("Other")
    vips = saved()
    saved("Everyone", rules=[])
    blast_create_from_segment(segment=vips, tag="Raya", message="Hi", device="5850", by=SYSTEM)
    admin_client.get(reverse("segment-list"))  # the session's first use

    page = queries(admin_client, reverse("segment-list"), django_assert_num_queries, 5)
    for n in range(5):
        saved(f"More {n}", rules=[{"kind": "never_messaged"}])
    queries(admin_client, reverse("segment-list"), django_assert_num_queries, 5)

    rows = {segment.name: (words, count) for segment, words, count in page.context["rows"]}
    assert rows == {"VIPs": (["Tag is “VIP”"], 2), "Everyone": ([], 3)}
    assert [s.blast_count for s, _, _ in page.context["rows"]] == [0, 1]  # by name: Everyone, VIPs
    assert "Segments" in page.content.decode() and reverse("segment-new") in page.content.decode()


def test_the_builder_adds_rows_previews_without_saving_and_saves(admin_client, django_assert_num_queries):
    person("Vip in Ipoh", tags=["VIP"], city="Ipoh"), person("Vip", tags=["VIP"])
    url = reverse("segment-new")
    admin_client.get(url)
    page = queries(admin_client, url, django_assert_num_queries, 5)
    assert len(page.context["rules"].forms) == 3 and b'list="attribute-keys"' in page.content

    form = {
        "name": "VIPs in Ipoh", "match": "all",
        "rules-TOTAL_FORMS": "3", "rules-INITIAL_FORMS": "0",
        "rules-0-kind": "tag", "rules-0-op": "is", "rules-0-value": "VIP",
        "rules-1-kind": "attribute", "rules-1-key": "city", "rules-1-op": "equals", "rules-1-value": "ipoh",
        "rules-2-kind": "",  # a blank row is no rule
    }  # fmt: skip
    added = admin_client.post(url, {**form, "rules-1-value": "", "add_rule": "1"})
    assert len(added.context["rules"].forms) == 4
    assert b"There is a problem" not in added.content  # adding a row shows no errors yet

    preview = queries(admin_client, url, django_assert_num_queries, 10, "post", {**form, "preview": "1"})
    assert preview.context["preview"]["count"] == 1
    assert [c.name for c in preview.context["preview"]["sample"]] == ["Vip in Ipoh"]
    assert "Preview (not saved)" in preview.content.decode() and not Segment.objects.exists()

    response = admin_client.post(url, {**form, "save": "1"})
    segment = Segment.objects.get()
    assert response.url == reverse("segment-detail", args=[segment.pk])
    assert segment.rules == rules_clean(
        [VIP, {"kind": "attribute", "op": "equals", "key": "city", "value": "ipoh"}]
    )
    assert AuditRecord.objects.get().via == AuditRecord.Via.PAGE


def test_the_builder_shows_each_rows_error_beside_its_field_and_saves_nothing(admin_client):
    saved("Taken")
    form = {
        "name": "Taken", "match": "all", "rules-TOTAL_FORMS": "3", "rules-INITIAL_FORMS": "0",
        "rules-0-kind": "tag", "rules-0-op": "is",  # no value
        "rules-1-kind": "", "rules-1-stage": "read",  # something typed, no kind
        "rules-2-kind": "messaged_fewer", "rules-2-times": "many", "rules-2-days": "30",
        "save": "1",
    }  # fmt: skip
    response = admin_client.post(reverse("segment-new"), form)

    html = response.content.decode()
    assert response.status_code == 200 and Segment.objects.count() == 1
    assert 'class="error-summary"' in html
    summary = dict(response.context["errors"])
    assert summary["id_name"] == "Name: Segment with this Name already exists."
    assert summary["id_rules-0-value"] == "Rule 1: Give the value."
    assert summary["id_rules-1-kind"].startswith("Rule 2: Choose what this rule looks at")
    assert summary["id_rules-2-times"] == "Rule 3: Enter a whole number."
    assert 'id="id_rules-0-value_error"' in html and 'href="#id_rules-0-value"' in html

    preview = admin_client.post(reverse("segment-new"), {**form, "save": "", "preview": "1"})
    assert "id_name" not in dict(preview.context["errors"])  # a preview does not need a name yet
    assert preview.context["preview"] is None


def test_changing_a_segment_starts_from_its_rules(admin_client, django_assert_num_queries):
    segment = saved(rules=[VIP, {"kind": "reached", "stage": "read", "tag": "Raya", "days": 30}])
    url = reverse("segment-edit", args=[segment.pk])
    admin_client.get(url)
    page = queries(admin_client, url, django_assert_num_queries, 6)
    rows = page.context["rules"]
    assert [row["kind"].value() for row in rows] == ["tag", "reached", None]  # and a blank row
    assert rows.forms[1]["days"].value() == 30

    form = {
        "name": "VIPs", "match": "any", "rules-TOTAL_FORMS": "3", "rules-INITIAL_FORMS": "2",
        "rules-0-kind": "",  # cleared: removed
        "rules-1-kind": "reached", "rules-1-stage": "read", "rules-1-tag": "Raya", "rules-1-days": "7",
        "rules-2-kind": "never_messaged", "save": "1",
    }  # fmt: skip
    assert admin_client.post(url, form).status_code == 302
    segment.refresh_from_db()
    assert (segment.match, [rule["kind"] for rule in segment.rules]) == ("any", ["reached", "never_messaged"])
    assert segment.rules[0]["days"] == 7


def test_the_segment_page_shows_count_and_sample_and_makes_a_draft_blast(
    admin_client, django_assert_num_queries
):
    for n in range(25):
        person(f"Vip {n}", tags=["VIP"], city="Ipoh")
    segment = saved()
    url = reverse("segment-detail", args=[segment.pk])
    admin_client.get(url)
    page = queries(admin_client, url, django_assert_num_queries, 11)
    assert (page.context["count"], len(page.context["sample"])) == (25, 20)
    assert page.context["words"] == ["Tag is “VIP”"]
    assert "data-confirm=" in page.content.decode()
    assert page.context["blast_form"]["device"].value() == "sandbox"  # WSAPME_DEVICE

    response = admin_client.post(
        reverse("segment-blast", args=[segment.pk]),
        {
            "tag": "Raya",
            "follow_up_stage": "Initial",
            "message": "Salam {first_name}, {city|your area}",
            "device": "5850",
        },
    )

    blast = Blast.objects.get()
    assert response.url == reverse("blast-detail", args=[blast.pk])
    assert (blast.segment, blast.recipients.count(), blast.state) == (segment, 25, Blast.State.DRAFT)


def test_the_new_blast_form_says_what_is_wrong_beside_the_field(admin_client):
    person("Vip", tags=["VIP"])
    segment = saved()
    url = reverse("segment-blast", args=[segment.pk])

    missing = admin_client.post(
        url, {"tag": "Raya", "follow_up_stage": "Initial", "message": "Hi {product}", "device": "5850"}
    )
    empty = admin_client.post(url, {"tag": "", "follow_up_stage": "Initial", "message": "", "device": "5850"})
    segment.rules = [{"kind": "tag", "op": "is", "value": "Nobody"}]
    segment_save(segment=segment, by=SYSTEM)
    nobody = admin_client.post(
        url, {"tag": "Raya", "follow_up_stage": "Initial", "message": "Hi", "device": "5850"}
    )

    assert "{product}" in missing.context["blast_form"].errors["message"][0]
    assert set(empty.context["blast_form"].errors) == {"tag", "message"}
    assert "has no members now" in nobody.context["blast_form"].non_field_errors()[0]
    assert all(r.status_code == 200 and b"There is a problem" in r.content for r in (missing, empty, nobody))
    assert not Blast.objects.exists()


def test_deleting_a_segment_keeps_the_blasts_made_from_it(admin_client):
    person("Vip", tags=["VIP"])
    segment = saved()
    blast = blast_create_from_segment(
        segment=segment, tag="Raya", message="Hi", device="5850", by=SYSTEM
    ).blast

    response = admin_client.post(reverse("segment-delete", args=[segment.pk]))

    assert response.url == reverse("segment-list")
    blast.refresh_from_db()
    assert (blast.segment, blast.recipients.count()) == (None, 1)
    assert AuditRecord.objects.filter(action=Did.SEGMENT_DELETED, via=AuditRecord.Via.PAGE).count() == 1


def test_a_viewer_may_look_and_preview_but_not_save_delete_or_make_a_blast(db):
    person("Vip", tags=["VIP"])
    segment = saved()
    client, _ = login("viewer")
    rules = {"rules-TOTAL_FORMS": "1", "rules-INITIAL_FORMS": "0", "rules-0-kind": "never_messaged"}

    assert client.get(reverse("segment-list")).status_code == 200
    assert client.get(reverse("segment-detail", args=[segment.pk])).status_code == 200
    preview = client.post(reverse("segment-new"), {"name": "X", "match": "all", **rules, "preview": "1"})
    assert preview.status_code == 200 and b"Save segment" not in preview.content
    refused = [
        client.post(reverse("segment-new"), {"name": "X", "match": "all", **rules, "save": "1"}),
        client.post(
            reverse("segment-edit", args=[segment.pk]), {"name": "X", "match": "all", **rules, "save": "1"}
        ),
        client.post(reverse("segment-delete", args=[segment.pk])),
        client.post(
            reverse("segment-blast", args=[segment.pk]), {"tag": "T", "message": "Hi", "device": "5850"}
        ),
    ]
    assert [response.status_code for response in refused] == [403] * 4
    assert list(Segment.objects.values_list("name", "rules")) == [("VIPs", [VIP])]
    assert not Blast.objects.exists()


def test_a_marketer_may_save_and_make_a_blast_and_anonymous_is_sent_to_sign_in(db):
    person("Vip", tags=["VIP"])
    client, _ = login("marketer")
    form = {"name": "VIPs", "match": "all", "rules-TOTAL_FORMS": "1", "rules-INITIAL_FORMS": "0",
            "rules-0-kind": "tag", "rules-0-op": "is", "rules-0-value": "VIP", "save": "1"}  # fmt: skip
    assert client.post(reverse("segment-new"), form).status_code == 302
    segment = Segment.objects.get()
    made = client.post(reverse("segment-blast", args=[segment.pk]), {"tag": "T", "follow_up_stage": "Initial",
                                                                    "message": "Hi", "device": "5850"})  # fmt: skip
    assert made.status_code == 302 and Blast.objects.get().created_by.username == "marketer"
    anonymous, _ = login("anonymous")
    assert anonymous.get(reverse("segment-list")).status_code == 302


# --- the admin ------------------------------------------------------------------------------------

ADMIN = "/staff-only/blasts/segment/"


def test_the_admin_checks_the_rules_json_saves_and_deletes_through_the_services(admin_client):
    bad = admin_client.post(f"{ADMIN}add/", {"name": "VIPs", "match": "all", "rules": '[{"kind": "tag"}]'})
    broken = admin_client.post(f"{ADMIN}add/", {"name": "VIPs", "match": "all", "rules": "[{kind"})
    assert bad.status_code == broken.status_code == 200 and not Segment.objects.exists()
    assert bad.context["adminform"].form.errors["rules"][0].startswith("Rule 1: op must be one of is, is_not")
    assert "Enter a valid JSON." in broken.context["adminform"].form.errors["rules"]

    made = admin_client.post(
        f"{ADMIN}add/",
        {"name": "VIPs", "match": "all", "rules": '[{"kind": "tag", "op": "is", "value": " VIP "}]'},
    )
    assert made.status_code == 302
    segment = Segment.objects.get()
    assert segment.rules == [VIP]
    page = admin_client.get(f"{ADMIN}{segment.pk}/change/").content.decode()
    assert "Tag is “VIP”" in page
    listed = admin_client.get(ADMIN, {"q": "vip", "match__exact": "all"}).content.decode()
    assert "Tag is “VIP”" in listed
    assert admin_client.post(f"{ADMIN}{segment.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Segment.objects.exists()
    assert list(AuditRecord.objects.order_by("id").values_list("action", "via")) == [
        (Did.SEGMENT_SAVED, "admin"), (Did.SEGMENT_DELETED, "admin"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "add", "change", "delete"), [("viewer", 403, 403, 403), ("marketer", 200, 200, 200)]
)
def test_the_admin_lets_each_role_do_what_its_permissions_say(db, role, add, change, delete):
    segment = saved()
    client, _ = login(role)
    assert client.get(ADMIN).status_code == 200
    assert client.get(f"{ADMIN}add/").status_code == add
    assert client.post(
        f"{ADMIN}{segment.pk}/change/", {"name": "Mine", "match": "all", "rules": "[]"}
    ).status_code in ((403,) if change == 403 else (302,))
    assert client.get(f"{ADMIN}{segment.pk}/delete/").status_code == delete
