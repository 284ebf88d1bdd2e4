"""Who may call what, the OpenAPI schema and its docs, and Schemathesis over every operation."""

import json
import re
import time
import traceback
from collections import Counter, defaultdict
from contextlib import contextmanager

import pytest
import schemathesis
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.contrib.staticfiles import finders
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections
from django.db.models import Case, Value, When
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode

from blasts.lifecycle import blast_queue
from blasts.models import Blast, BlastRecipient, Contact, OptOut, Segment, StatusHistory
from blasts.segments.rules import rules_clean
from blasts.services import recipient_advance
from blastsite.wsgi import application

from .conftest import make_blast

Status = BlastRecipient.Status
# Open to anyone: the gateway's callbacks (they check a secret of their own) and the health check.
PUBLIC = {"wsapme-webhook", "wsapme-webhook-token", "healthz"}
ROADMAP_BODY = {
    "blast_tag": "Product Launch",
    "recipients": ["+60123456789", {"phone": "+60123456790", "name": "Aisyah"}],
    "message": "Campaign message",
    "follow_up_stage": "Initial",
}

READ_LAUNCH = [{"kind": "reached", "stage": "read", "tag": "Product Launch"}]
# A body each operation succeeds with, for those a generated one rarely fits.
VALID_BODIES = {
    ("POST", "/api/recipients/{id}/mark/"): {"status": "CLOSED"},
    ("POST", "/api/contacts/"): {"phone": "+60123450001", "name": "Aisyah", "attributes": {"city": "Ipoh"}},
    ("POST", "/api/opt-outs/"): {"phone": "+60123450002", "reason": "Asked by phone"},
    ("POST", "/api/opt-outs/{id}/remove/"): {"reason": "Asked to hear from us again"},
    ("POST", "/api/segments/"): {"name": "Readers", "match": "any", "rules": READ_LAUNCH},
    ("PUT", "/api/segments/{id}/"): {"name": "Renamed", "match": "all", "rules": []},
    ("POST", "/api/segments/preview/"): {"match": "all", "rules": READ_LAUNCH},
    ("POST", "/api/segments/{id}/blast/"): {
        "tag": "From a segment",
        "message": "Hi {name}",
        "device": "sandbox",
    },
}

ADMIN = "/" + settings.ADMIN_PATH  # configurable; the tests run it at /staff-only/


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def seeded(db):
    """A blast that was sent (messages with ids, one read, one closed) and a draft."""
    sent = make_blast(4, tag="Product Launch", device="sandbox")
    blast_queue(blast=sent)
    for index, recipient in enumerate(sent.recipients.order_by("id")):
        recipient_advance(
            recipient=recipient,
            status=[Status.PENDING, Status.DELIVERY_ACK, Status.READ_ACK, Status.CLOSED][index],
            source=StatusHistory.Source.SEND,
            also={"message_id": f"SEED-{recipient.pk}"},
        )
    draft = make_blast(2, tag="Follow up", follow_up_stage="Follow-up 1", device="sandbox")
    return sent, draft


# --- anonymous access, over every URL the project serves ----------------------------------------------


def url_patterns(patterns=None, namespace="", chain=()):
    """(namespaced name or None, [pattern of each level]) for every URL the project serves."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from url_patterns(pattern.url_patterns, inner, (*chain, pattern.pattern))
        else:
            assert isinstance(pattern, URLPattern)
            yield (f"{namespace}{pattern.name}" if pattern.name else None), [*chain, pattern.pattern]


def concrete_url(chain: list, blast: Blast, recipient: BlastRecipient) -> str:
    """The URL with real values: an existing blast's or recipient's id, a registered app, ...

    Filled in from the patterns' text rather than reversed by name: some API and page names are the same.
    """
    values = {
        "object_id": blast.pk,
        "blast_pk": blast.pk,
        "app_label": "blasts",
        "content_type_id": ContentType.objects.get_for_model(Blast).pk,
        "url": "no-such-page/",
        "name": "send",
    }
    url = ""
    for level in chain:
        text = str(level).lstrip("^").removesuffix("$").removesuffix("\\Z").replace("/?", "/")
        for group in re.finditer(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)", text):  # <int:pk> or (?P<pk>...)
            name = group[1] or group[2]
            before = (url + text[: group.start()]).removesuffix("/")
            value = (
                recipient.pk if name == "pk" and before.endswith("recipients") else values.get(name, blast.pk)
            )
            text = text.replace(group[0], str(value), 1)
        url += text
    return "/" + url


def test_anonymous_requests_are_refused_everywhere_but_the_webhook_and_health(client, seeded, openapi):
    blast, _ = seeded
    recipient = blast.recipients.first()
    checked = set()

    for name, chain in url_patterns():
        if name in PUBLIC or name in ("login", "logout", "admin:login"):  # where anonymous users go
            continue
        url = concrete_url(chain, blast, recipient)
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            where = f"anonymous {method.upper()} {url} ({name}) -> {response.status_code}"
            if url.startswith("/api/"):
                assert response.status_code in (401, 403), where
            elif url.startswith(ADMIN):  # the admin sends anonymous users to its own sign-in page
                assert response.status_code == 302, where
                assert response["Location"].startswith((f"{ADMIN}login/?next=", ADMIN)), where
            else:  # the pages, to theirs, which does not give the admin's path away
                assert response.status_code == 302, where
                assert response["Location"].startswith("/login/?next="), where
        checked.add(url)

    # Every documented API operation, the docs, and the admin were among them.
    documented = {
        path.replace("{id}", str(recipient.pk if "/recipients/{id}" in path else blast.pk))
        for path in openapi["paths"]
    }
    assert len(documented) >= 14 and documented <= checked, documented - checked
    assert {
        "/api/docs/",
        "/api/redoc/",
        "/api/blasts/",
        ADMIN,
        f"{ADMIN}blasts/blast/{blast.pk}/change/",
    } <= checked
    blast.refresh_from_db()
    assert blast.state == Blast.State.QUEUED and Blast.objects.count() == 2  # and nothing changed


def test_anonymous_api_requests_with_a_trailing_slash_or_csv_are_refused_too(client, seeded):
    blast, _ = seeded
    for url in (
        "/api/blasts/",
        f"/api/blasts/{blast.pk}/",
        f"/api/blasts/{blast.pk}/recipients?format=csv",
        f"/api/blasts/{blast.pk}/recipients/?format=csv",
        "/api/schema/?format=json",
    ):
        assert client.get(url).status_code == 401, url


def test_health_and_the_webhook_need_no_login(client, db, settings):
    assert client.get("/healthz").status_code == 200
    # The webhook checks a secret of its own instead of a login: never a redirect to a sign-in page.
    assert client.post("/api/webhook/wsapme", "{}", content_type="application/json").status_code == 401
    secret = {"X-Webhook-Token": settings.WSAPME_WEBHOOK_SECRETS[0]}
    response = client.post("/api/webhook/wsapme", "{}", content_type="application/json", headers=secret)
    assert response.status_code == 200


def test_a_logged_in_non_staff_user_cannot_read_the_schema_or_docs(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("marketer"))
    for url in ("/api/schema/", "/api/docs/", "/api/redoc/"):
        assert client.get(url).status_code == 403, url


# --- the schema and its docs ---------------------------------------------------------------------------


@pytest.fixture
def openapi(admin_client):
    response = admin_client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


def test_the_schema_is_openapi_3_with_the_roadmaps_names(openapi):
    assert openapi["openapi"].startswith("3.")
    schemas = openapi["components"]["schemas"]
    assert {"blast_id", "blast_tag", "follow_up_stage", "metrics", "state"} <= set(
        schemas["Blast"]["properties"]
    )
    roadmap = {"blast_tag", "follow_up_stage", "message", "recipients", "device", "scheduled_at"}
    variants = {"variants", "track_links", "test_share", "test_hours", "test_metric"}  # issue 21
    assert roadmap | variants == set(schemas["BlastCreateRequest"]["properties"])
    assert set(schemas["BlastCreated"]["properties"]) == {
        "blast_id",
        "created",
        "duplicates",
        "opted_out",
        "canaries",
    }
    assert {"sent", "received", "read", "replied", "closed"} <= set(schemas["Metrics"]["properties"])
    assert "READ_ACK" in schemas["RecipientStatusEnum"]["enum"]


def test_the_schema_documents_every_roadmap_endpoint_and_filter(openapi):
    paths = openapi["paths"]
    operations = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert {
        ("GET", "/api/blasts/"), ("POST", "/api/blasts/"), ("GET", "/api/blasts/{id}/"),
        ("POST", "/api/blasts/{id}/send/"), ("POST", "/api/blasts/{id}/check-status/"),
        ("GET", "/api/blasts/{id}/metrics/"), ("GET", "/api/blasts/{id}/stuck-recipients/"),
        ("GET", "/api/blasts/{id}/recipients/"), ("POST", "/api/blasts/{id}/pause/"),
        ("POST", "/api/blasts/{id}/resume/"), ("POST", "/api/blasts/{id}/cancel/"),
        ("GET", "/api/recipients/{id}/"), ("GET", "/api/recipients/{id}/history/"),
        ("POST", "/api/recipients/{id}/mark/"), ("POST", "/api/blasts/{id}/follow-up/"),
    } <= operations  # fmt: skip
    list_params = {p["name"] for p in paths["/api/blasts/"]["get"]["parameters"]}
    filters = {"date", "date_from", "date_to", "tag", "stage", "state", "ordering", "page", "page_size"}
    assert filters <= list_params
    recipient_params = {p["name"] for p in paths["/api/blasts/{id}/recipients/"]["get"]["parameters"]}
    assert {"status", "stage", "q", "format", "page", "page_size"} <= recipient_params
    # Every operation but the schema's own asks for a token (or a session).
    for path, item in paths.items():
        for method, operation in item.items():
            if path != "/api/schema/":
                assert {"tokenAuth": []} in operation["security"], (method, path)
            assert {} not in operation.get("security", []), f"{method} {path} is documented as anonymous"


def test_stuck_recipients_are_documented_as_the_plain_list_they_are(openapi):
    operation = openapi["paths"]["/api/blasts/{id}/stuck-recipients/"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"type": "array", "items": {"$ref": "#/components/schemas/Stuck"}}
    assert {p["name"] for p in operation["parameters"]} == {"id"}


def external_links(page: str) -> list[str]:
    links = re.findall(r"""(?:src|href)=["']([^"']+)""", page)
    return [link for link in links if link.startswith(("http:", "https:", "//"))]


@pytest.mark.parametrize(
    ("url", "bundle"),
    [
        ("/api/docs/", "swagger-ui-dist/swagger-ui-bundle.js"),
        ("/api/redoc/", "redoc/bundles/redoc.standalone.js"),
    ],
)
def test_the_docs_pages_load_their_scripts_from_our_static_files_not_a_cdn(admin_client, url, bundle):
    response = admin_client.get(url)

    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for cdn in ("cdn.", "jsdelivr", "unpkg"):
        assert cdn not in page, cdn
    scripts = re.findall(r"""<script[^>]+src=["']([^"']+)""", page)
    assert f"/static/drf_spectacular_sidecar/{bundle}" in scripts, scripts
    assets = re.findall(r"""(?:src|href)=["']?(/static/[^"' >]+)""", page)
    for asset in assets:  # each one is really shipped with the project (collectstatic finds it)
        assert finders.find(asset.removeprefix("/static/").split("?")[0]), asset
    assert all(script.startswith("/static/") for script in scripts), scripts
    assert "/api/schema/" in page


def test_the_swagger_page_loads_nothing_from_another_host(admin_client):
    assert external_links(admin_client.get("/api/docs/").content.decode()) == []


def test_the_redoc_page_loads_nothing_from_another_host(admin_client):
    assert external_links(admin_client.get("/api/redoc/").content.decode()) == []


# --- Schemathesis ---------------------------------------------------------------------------------------


@contextmanager
def connections_kept_open():
    """Django closes "old" connections when a request starts and ends; inside a test's transaction
    that would spoil it, so, like Django's own test client, unhook that handler meanwhile."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def in_process(environ, start_response):
    """The project's WSGI application, called in this thread and inside the test's transaction."""
    with connections_kept_open():
        response = application(environ, start_response)
        try:
            body = b"".join(response)
        finally:
            response.close()  # sends request_finished
    return [body]


@pytest.fixture
def server_errors():
    """The exceptions behind 500s (the WSGI handler turns them into responses)."""
    errors = []

    def record(sender, request=None, **kwargs):
        errors.append(f"{request.method} {request.get_full_path()}\n{traceback.format_exc()}")

    got_request_exception.connect(record, weak=False)
    yield errors
    got_request_exception.disconnect(record)


EXAMPLES_PER_STRATEGY = 12
JSON = "application/json"


@pytest.fixture
def lifecycle(seeded):
    """A blast in each state the actions move between (state by id); reset before every generated case."""
    sent, draft = seeded
    paused, completed = make_blast(1, device="sandbox"), make_blast(1, device="sandbox")
    Blast.objects.filter(pk=paused.pk).update(state=Blast.State.PAUSED)
    Blast.objects.filter(pk=completed.pk).update(state=Blast.State.COMPLETED)
    return {sent.pk: Blast.State.QUEUED, draft.pk: Blast.State.DRAFT, paused.pk: Blast.State.PAUSED,
            completed.pk: Blast.State.COMPLETED}  # fmt: skip


def blast_bodies():
    """Create-blast bodies that get past phone validation (generated phones never do), the rest generated."""
    text = st.text(max_size=120)
    phone = st.sampled_from(
        ["+60123456789", "0123456790", "+60 12-345 6791", "+6011 2345 6789", "+6598765432"]
    )
    recipient = st.one_of(phone, st.fixed_dictionaries({"phone": phone}, optional={"name": text}))
    when = st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat())
    return st.fixed_dictionaries(
        {"blast_tag": text, "message": text, "recipients": st.lists(recipient, max_size=4)},
        optional={
            "follow_up_stage": text,
            "device": text,
            "scheduled_at": st.one_of(st.none(), when),
            "variants": st.lists(text, max_size=5),
            "track_links": st.booleans(),
            "test_share": st.one_of(st.none(), st.integers(-5, 120)),
            "test_hours": st.floats(allow_nan=True, allow_infinity=True),
            "test_metric": st.sampled_from(["replied", "clicked", "opened"]),
        },
    )


def replace_body(case, body):
    case.body = body
    return case


def test_schemathesis_finds_no_server_error_in_any_operation(
    admin_client, admin_user, settings, seeded, lifecycle, wsapme_sandbox, server_errors
):
    # check-status talks to the in-process sandbox gateway, one message at a time, unpaced.
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, wsapme_sandbox.url
    settings.POLL_CONCURRENCY, settings.POLL_RATE_PER_SECOND = 1, 0
    raw = json.loads(admin_client.get("/api/schema/?format=json").content)
    schema = schemathesis.openapi.from_dict(raw)
    headers = {"Authorization": f"Token {Token.objects.create(user=admin_user).key}"}
    recipient_ids = list(BlastRecipient.objects.filter(blast__in=seeded).values_list("pk", flat=True))
    reset_states = Case(*(When(pk=pk, then=Value(state)) for pk, state in lifecycle.items()))
    # Segments and opt-outs that DELETE or remove may take away: made again before every case.
    segments = {
        1001: {"name": "Everyone", "rules": []},
        1002: {"name": "Launch readers", "rules": rules_clean(READ_LAUNCH)},
    }
    opt_outs = {2001: {"phone": "+60190000001", "reason": "asked"}, 2002: {"phone": "+60190000002"}}
    ids = {
        "/api/recipients/": recipient_ids,
        "/api/contacts/": list(Contact.objects.values_list("pk", flat=True)),
        "/api/segments/": list(segments),
        "/api/opt-outs/": list(opt_outs),
    }
    statuses: dict[str, Counter] = defaultdict(Counter)
    failures: list[str] = []
    started = time.monotonic()

    def call(case):
        Blast.objects.filter(pk__in=lifecycle).update(state=reset_states)
        for pk, fields in segments.items():
            Segment.objects.get_or_create(pk=pk, defaults=fields)
        for pk, fields in opt_outs.items():
            OptOut.objects.filter(phone=fields["phone"]).exclude(pk=pk).delete()
            OptOut.objects.get_or_create(pk=pk, defaults=fields)
        response = case.call(app=in_process, headers=headers)
        statuses[f"{case.method.upper()} {case.operation.path}"][response.status_code] += 1
        if response.status_code >= 500:
            failures.append(f"{response.status_code}: {case.as_curl_command(headers=headers)}")

    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        with_body = {"body": VALID_BODIES[key], "media_type": JSON} if key in VALID_BODIES else {}
        explicit = [operation.Case(**with_body)]
        strategies = [operation.as_strategy(), operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)]
        if "{id}" in operation.path:
            # Generated ids are almost never real: every seeded object once, then most cases use one.
            real = next(
                (pks for prefix, pks in ids.items() if operation.path.startswith(prefix)), list(lifecycle)
            )
            explicit = [operation.Case(path_parameters={"id": pk}, **with_body) for pk in real]
            real_id = st.sampled_from(real)
            strategies += [
                real_id.flatmap(lambda pk, op=operation: op.as_strategy(path_parameters={"id": pk})),
                real_id.flatmap(lambda pk, op=operation: op.as_strategy(path_parameters={"id": pk})),
                real_id.flatmap(
                    lambda pk, op=operation: op.as_strategy(
                        GenerationMode.NEGATIVE, path_parameters={"id": pk}
                    )
                ),
            ]
        if key == ("POST", "/api/blasts/"):
            explicit = [operation.Case(body=ROADMAP_BODY, media_type=JSON)]
            valid = operation.as_strategy(body=ROADMAP_BODY, media_type=JSON)
            strategies += [valid, st.builds(replace_body, valid, blast_bodies())]

        for case in explicit:
            call(case)

        @hypothesis_settings(
            max_examples=EXAMPLES_PER_STRATEGY * len(strategies),
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.one_of(strategies))
        def exercise(case):
            call(case)

        exercise()

    elapsed = time.monotonic() - started
    calls = sum(sum(counts.values()) for counts in statuses.values())
    report = "\n".join(
        f"{label}: {dict(sorted(counts.items()))}" for label, counts in sorted(statuses.items())
    )
    print(f"Schemathesis: {calls} calls in {elapsed:.1f}s\n{report}")
    assert not failures, "\n".join(failures[:10] + server_errors[:3])
    documented = {f"{method.upper()} {path}" for path, item in raw["paths"].items() for method in item}
    assert set(statuses) == documented
    # Each operation answered a real object at least once (not only 404s), and each one succeeded.
    assert all(any(s != 404 for s in counts) for counts in statuses.values()), report
    assert all(any(200 <= s < 300 for s in counts) for counts in statuses.values()), report
