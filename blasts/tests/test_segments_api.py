"""/api/segments (issue 19): CRUD with rules checked, the live count, members page by page, a blast
made from a segment, a preview of rules not saved; who may do what."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blasts.audit import SYSTEM
from blasts.models import AuditRecord, Blast, OptOut, Segment
from blasts.segments.services import segment_save

from .test_access import login
from .test_segments import VIP, person

Did = AuditRecord.Action
API = "/api/segments"


def saved(name="VIPs", rules=(VIP,), match="all") -> Segment:
    return segment_save(segment=Segment(name=name, match=match, rules=list(rules)), by=SYSTEM)


def test_a_segment_is_created_read_changed_and_deleted_with_an_audit_row_each(admin_client):
    made = admin_client.post(API, {"name": "VIPs", "rules": [{"kind": "tag", "op": "is", "value": " VIP "}]},
                             content_type="application/json")  # fmt: skip
    assert made.status_code == 201, made.json()
    body = made.json()
    assert (body["name"], body["match"], body["rules"], body["rules_words"], body["created_by"]) == (
        "VIPs", "all", [VIP], ["Tag is “VIP”"], "admin",
    )  # fmt: skip
    url = f"{API}/{body['id']}"

    assert admin_client.get(API).json()["results"][0]["id"] == body["id"]
    assert admin_client.get(url).json() == body
    changed = admin_client.put(url, {"name": "VIPs", "match": "any", "rules": [VIP, {"kind": "never_messaged"}]},
                               content_type="application/json")  # fmt: skip
    assert changed.status_code == 200 and changed.json()["rules_words"] == ["Tag is “VIP”", "Never messaged"]
    patched = admin_client.patch(url, {"name": "Best VIPs"}, content_type="application/json")
    assert (patched.json()["name"], patched.json()["match"]) == ("Best VIPs", "any")
    assert admin_client.delete(url).status_code == 204

    assert not Segment.objects.exists()
    assert list(AuditRecord.objects.order_by("id").values_list("action", "via")) == [
        (Did.SEGMENT_SAVED, "api"), (Did.SEGMENT_SAVED, "api"), (Did.SEGMENT_SAVED, "api"), (Did.SEGMENT_DELETED, "api"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"name": "X", "rules": [VIP, {"kind": "tag", "op": "is"}]}, {"rules": ["Rule 2: give the value."]}),
        ({"name": "X", "rules": {"kind": "tag"}}, {"rules": ["The rules are a list."]}),
        ({"name": "X", "rules": [{"kind": "reached", "stage": "seen"}]},
         {"rules": ["Rule 1: stage must be one of sent, received, read, replied, closed."]}),
        ({"name": "X", "match": "some"}, {"match": ['"some" is not a valid choice.']}),
        ({"name": "VIPs"}, {"name": ["segment with this name already exists."]}),
        ({"name": "a\x00b"}, {"name": ["Null characters are not allowed."]}),
        ({"rules": []}, {"name": ["This field is required."]}),
    ],
)  # fmt: skip
def test_a_wrong_segment_is_a_400_naming_what_is_wrong_and_saves_nothing(admin_client, body, errors):
    saved()
    response = admin_client.post(API, body, content_type="application/json")
    assert (response.status_code, response.json()) == (400, errors)
    assert Segment.objects.count() == 1 and AuditRecord.objects.count() == 1  # the one saved() wrote


@given(rules=st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.sampled_from(["tag", "read", "is", "city"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["kind", "op", "key", "value", "stage", "tag", "days", "times"]), inner, max_size=5),
    max_leaves=12,
))  # fmt: skip
def test_any_json_as_rules_is_a_200_or_a_400_never_an_error(admin_client, rules):
    response = admin_client.post(f"{API}/preview", {"rules": rules}, content_type="application/json")
    assert response.status_code in (200, 400)


def test_count_and_members_page_by_page_leave_out_opted_out_numbers(admin_client, django_assert_num_queries):
    contacts = [person(f"Vip {n}", tags=["VIP", "Lead"], city="Ipoh") for n in range(5)]
    OptOut.objects.create(phone=contacts[0].phone)
    segment = saved()

    assert admin_client.get(f"{API}/{segment.pk}/count").json() == {"count": 4}
    admin_client.get(f"{API}/{segment.pk}/members")
    with django_assert_num_queries(6):  # session, user, segment, count, page, tags
        first = admin_client.get(f"{API}/{segment.pk}/members", {"page_size": 3}).json()
    second = admin_client.get(f"{API}/{segment.pk}/members", {"page_size": 3, "page": 2}).json()

    assert first["count"] == 4 and first["next"] and second["next"] is None
    assert [m["phone"] for m in first["results"] + second["results"]] == [c.phone for c in contacts[1:]]
    assert first["results"][0] == {
        "id": contacts[1].pk, "phone": contacts[1].phone, "name": "Vip 1", "tags": ["Lead", "VIP"],
        "attributes": {"city": "Ipoh"},
    }  # fmt: skip
    assert admin_client.get(f"{API}/{segment.pk}/members", {"page": "\u0663"}).status_code == 400


def test_a_blast_from_a_segment_is_a_201_with_its_counts(admin_client):
    first, second = person("First", tags=["VIP"], city="Ipoh"), person("Second", tags=["VIP"])
    segment = saved()

    response = admin_client.post(f"{API}/{segment.pk}/blast", {"tag": "Raya", "message": "Salam {city|kawan}"},
                                 content_type="application/json")  # fmt: skip

    assert response.status_code == 201, response.json()
    blast = Blast.objects.get()
    assert response.json() == {
        "blast_id": blast.pk,
        "created": 2,
        "duplicates": 0,
        "opted_out": 0,
        "canaries": 0,
    }
    assert (blast.tag, blast.follow_up_stage, blast.device, blast.segment) == (
        "Raya",
        "Initial",
        "sandbox",
        segment,
    )
    assert set(blast.recipients.values_list("contact_id", flat=True)) == {first.pk, second.pk}
    assert AuditRecord.objects.get(action=Did.CREATED).via == "api"


def test_a_blast_from_an_empty_segment_or_with_a_placeholder_nobody_has_is_a_400(admin_client):
    person("Vip", tags=["VIP"])
    segment, empty = saved(), saved("Nobody", rules=[{"kind": "tag", "op": "is", "value": "Nobody"}])

    nobody = admin_client.post(
        f"{API}/{empty.pk}/blast", {"tag": "Raya", "message": "Hi"}, content_type="application/json"
    )
    typo = admin_client.post(f"{API}/{segment.pk}/blast", {"tag": "Raya", "message": "Hi {nmae}"},
                             content_type="application/json")  # fmt: skip
    no_tag = admin_client.post(
        f"{API}/{segment.pk}/blast", {"message": "Hi"}, content_type="application/json"
    )

    assert nobody.status_code == 400 and "has no members now" in nobody.json()["non_field_errors"][0]
    assert typo.status_code == 400 and "{nmae}" in typo.json()["message"][0]
    assert (no_tag.status_code, no_tag.json()) == (400, {"tag": ["This field is required."]})
    assert not Blast.objects.exists()


def test_a_preview_counts_and_samples_rules_without_saving(admin_client):
    person("Vip in Ipoh", tags=["VIP"], city="Ipoh"), person("Vip", tags=["VIP"]), person("Ipoh", city="Ipoh")
    ipoh = {"kind": "attribute", "op": "equals", "key": "city", "value": "IPOH"}

    both = admin_client.post(f"{API}/preview", {"rules": [VIP, ipoh]}, content_type="application/json").json()
    either = admin_client.post(
        f"{API}/preview", {"match": "any", "rules": [VIP, ipoh]}, content_type="application/json"
    )

    assert (both["count"], [m["name"] for m in both["sample"]]) == (1, ["Vip in Ipoh"])
    assert either.json()["count"] == 3
    assert not Segment.objects.exists()


def test_a_viewer_reads_and_previews_but_may_not_change_delete_or_blast(db):
    person("Vip", tags=["VIP"])
    segment = saved()
    client, _ = login("viewer")
    url = f"{API}/{segment.pk}"

    reads = [client.get(API), client.get(url), client.get(f"{url}/count"), client.get(f"{url}/members"),
             client.post(f"{API}/preview", {"rules": [VIP]}, content_type="application/json")]  # fmt: skip
    writes = [
        client.post(API, {"name": "Mine", "rules": []}, content_type="application/json"),
        client.patch(url, {"name": "Mine"}, content_type="application/json"),
        client.delete(url),
        client.post(f"{url}/blast", {"tag": "T", "message": "Hi"}, content_type="application/json"),
    ]

    assert [r.status_code for r in reads] == [200] * 5
    assert [r.status_code for r in writes] == [403] * 4
    assert "segment" in writes[0].json()["detail"] and "blasts.add_blast" in writes[3].json()["detail"]
    assert list(Segment.objects.values_list("name", flat=True)) == ["VIPs"] and not Blast.objects.exists()
    anonymous, _ = login("anonymous")
    assert anonymous.get(API).status_code == 401


def test_a_segment_id_is_ascii_digits_only(admin_client):
    segment = saved()
    assert admin_client.get(f"{API}/{segment.pk}").status_code == 200
    assert admin_client.get(f"{API}/\u0661").status_code == 404


def test_the_segments_api_is_in_the_openapi_schema(admin_client):
    paths = admin_client.get("/api/schema/", {"format": "json"}).json()["paths"]
    for path in ("/api/segments", "/api/segments/{id}", "/api/segments/{id}/count", "/api/segments/{id}/members",
                 "/api/segments/{id}/blast", "/api/segments/preview"):  # fmt: skip
        assert any(found.rstrip("/") == path for found in paths), path
