"""The pages' own sign-in: it never shows the admin's secret path, and wrong passwords lock it like the admin's."""

import pytest
from django.conf import settings
from django.urls import URLPattern, reverse

from blasts import urls as blasts_urls

PASSWORD = "right-password-123"
SECRET_PATH = settings.ADMIN_PATH.strip("/")  # "staff-only" in tests


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def marketer(django_user_model):
    return django_user_model.objects.create_user("marketer", password=PASSWORD, is_staff=True)


def page_urls() -> list[str]:
    """Every page of blasts/urls.py, ids filled in: not the API, the health check or the sign-in itself."""
    values = {"pk": 1, "blast_pk": 1, "name": "send"}  # the sign-in comes before any lookup
    return [
        reverse(pattern.name, kwargs={name: values[name] for name in pattern.pattern.converters})
        for pattern in blasts_urls.urlpatterns
        if isinstance(pattern, URLPattern)
        and not str(pattern.pattern).lstrip("^").startswith("api/")
        and pattern.name not in {"healthz", "login", "logout"}
    ]


def test_every_page_sends_strangers_to_a_sign_in_that_never_shows_the_admins_path(client, db):
    urls = page_urls()
    assert {"/", "/overview/", "/blasts/1/", "/blasts/1/recipients.csv", "/status/"} <= set(urls)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next="), url
        assert SECRET_PATH not in response["Location"], url
        sign_in = client.get(response["Location"])
        assert sign_in.status_code == 200 and 'name="password"' in sign_in.content.decode()
        assert SECRET_PATH not in sign_in.content.decode(), url
    # The admin keeps its own sign-in, at its secret path.
    assert client.get(f"/{settings.ADMIN_PATH}")["Location"].startswith(f"/{settings.ADMIN_PATH}login/")


def test_signing_in_goes_to_the_page_in_next(client, marketer):
    response = client.post(
        "/login/", {"username": "marketer", "password": PASSWORD, "next": "/overview/?tag=Promo"}
    )
    assert (response.status_code, response["Location"]) == (302, "/overview/?tag=Promo")
    assert client.get(response["Location"]).status_code == 200


def test_signing_in_without_next_goes_to_the_blast_list(client, marketer):
    response = client.post("/login/", {"username": "marketer", "password": PASSWORD})
    assert (response.status_code, response["Location"]) == (302, reverse("blast-list"))


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "https:evil.example",
        "\\\\evil.example",
    ],
)
def test_a_next_to_another_site_is_refused_for_the_blast_list(client, marketer, next_url):
    response = client.post("/login/", {"username": "marketer", "password": PASSWORD, "next": next_url})
    assert (response.status_code, response["Location"]) == (302, reverse("blast-list"))
    assert "evil" not in client.get(f"/login/?next={next_url}").content.decode()


def test_a_wrong_password_is_summarised_at_the_top_and_shown_by_the_field(client, marketer):
    response = client.post("/login/", {"username": "marketer", "password": "wrong"})
    html = response.content.decode()
    assert response.status_code == 200 and "_auth_user_id" not in client.session
    message = "Please enter the correct username and password for a staff account."
    assert html.index("There is a problem") < html.index("<form")
    assert f'<a href="#id_username">{message}' in html  # the summary links to the field
    assert f'<ul class="errors" id="id_username_error"><li>{message}' in html  # and the field says it
    assert 'value="marketer"' in html  # the username is kept


def test_empty_fields_are_each_linked_from_the_summary(client, db):
    html = client.post("/login/", {"username": "", "password": ""}).content.decode()
    for field in ("username", "password"):
        assert f'<a href="#id_{field}">This field is required.</a>' in html
        assert f'aria-describedby="id_{field}_error"' in html


def test_an_account_that_is_not_staff_cannot_sign_in_to_the_pages(client, django_user_model):
    django_user_model.objects.create_user("someone", password=PASSWORD)
    response = client.post("/login/", {"username": "someone", "password": PASSWORD})
    assert response.status_code == 200 and "_auth_user_id" not in client.session
    assert "for a staff account" in response.content.decode()


def test_the_sign_in_page_is_locked_after_the_failure_limit(client, marketer):
    wrong = {"username": "marketer", "password": "wrong"}
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert client.post("/login/", wrong).status_code == 200
    assert client.post("/login/", wrong).status_code == 429  # the last one allowed locks
    locked = client.post("/login/", {"username": "marketer", "password": PASSWORD})
    assert locked.status_code == 429 and "_auth_user_id" not in client.session
    assert "Too many wrong passwords" in locked.content.decode()
    assert SECRET_PATH not in locked.content.decode()


def test_signed_in_staff_see_the_admin_link_and_sign_out_with_a_post(client, marketer):
    client.force_login(marketer)
    assert f'href="/{settings.ADMIN_PATH}"' in client.get("/").content.decode()
    assert client.get("/logout/").status_code == 405  # a link or an image cannot sign anyone out
    response = client.post("/logout/")
    assert (response.status_code, response["Location"]) == (302, reverse("login"))
    assert client.get("/")["Location"] == "/login/?next=/"
