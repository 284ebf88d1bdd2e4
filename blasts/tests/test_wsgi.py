"""blastsite.wsgi.application called as a WSGI server calls it: what Django cannot build a request from.

Django's test client builds the request the same way and fails before any of this, so these
tests hand the application an environ dict and a start_response themselves.
"""

import io
import json
import logging
import sys

import pytest

from blastsite.wsgi import application

WEBHOOK = "/api/webhook/wsapme"
TOKEN = "token=test-webhook-secret"  # pytest.ini


def call(path=WEBHOOK, *, content_type="application/json", query=TOKEN, body=b"[]", **extra):
    """(status code, body) of the application for one request; POST to the webhook, GET elsewhere."""
    environ = {
        "REQUEST_METHOD": "POST" if path == WEBHOOK else "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **extra,
    }
    statuses = []
    answer = application(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        content = b"".join(answer)
    finally:
        if hasattr(answer, "close"):
            answer.close()
    return int(statuses[0].split()[0]), content


def one_line_error(content: bytes) -> bool:
    message = json.loads(content)["error"]
    return bool(message) and "\n" not in message


def tracebacks(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "charset",
    [
        "rot13",  # not text encodings: decoding the query string raised LookupError
        "hex",
        "base64",
        "zlib_codec",
        "undefined",  # raised UnicodeError
        "punycode",
        "no-such-charset",  # Django ignored it and read the body as UTF-8 anyway
        "utf-16",  # not ASCII-compatible: the query string was decoded into other characters
        "utf-32",
        "utf-7",
        "cp500",  # EBCDIC
    ],
)
@pytest.mark.parametrize("path", [WEBHOOK, "/staff-only/login/", "/healthz"])
def test_a_charset_that_does_not_read_ascii_as_ascii_is_a_415_on_every_url(charset, path, caplog):
    status, content = call(path, content_type=f"application/json; charset={charset}")
    assert status == 415 and one_line_error(content)
    assert tracebacks(caplog) == []


def test_the_webhook_token_in_the_query_string_is_read_right_or_the_charset_refused(db):
    # As UTF-16 these 26 bytes were 13 CJK characters, so the right secret got a 401.
    query = TOKEN + "&x"
    assert call(query=query, content_type="application/json; charset=utf-16")[0] == 415
    for charset in ("utf-8", "UTF8", "latin-1", "windows-1252", "us-ascii"):
        answer = call(query=query, content_type=f"application/json; charset={charset}")
        assert answer == (200, b'{"received": 0}'), charset


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json; charset*=x'y'%E9", 400),  # an RFC 2231 parameter Django cannot parse
        ("application/json; charset=\x00", 415),  # codecs.lookup raised ValueError, not LookupError
    ],
)
@pytest.mark.parametrize("path", [WEBHOOK, "/staff-only/login/"])
def test_a_content_type_django_cannot_read_is_a_4xx(content_type, status, path, caplog):
    answer_status, content = call(path, content_type=content_type)
    assert answer_status == status and one_line_error(content)
    assert tracebacks(caplog) == []


def test_too_many_query_fields_with_a_charset_is_a_400_not_a_500(caplog):
    # Given a charset, Django parses the query string while building the request, outside the
    # middleware that turns its TooManyFieldsSent into a 400 everywhere else.
    query = "&".join(["x=1"] * 1001)  # DATA_UPLOAD_MAX_NUMBER_FIELDS is 1,000
    status, content = call("/staff-only/login/", query=query, content_type="text/plain; charset=utf-8")
    assert status == 400 and one_line_error(content)
    assert tracebacks(caplog) == []


def test_a_content_length_that_is_not_a_number_is_a_400(caplog):
    # runserver passes it on as sent (gunicorn refuses it); Django's int() then raised while the
    # CSRF check read the form, and again in the 500 page, out of the application.
    status, content = call(
        "/staff-only/login/",
        content_type="application/x-www-form-urlencoded",
        body=b"username=a&password=b",
        REQUEST_METHOD="POST",
        CONTENT_LENGTH="1e3",
        HTTP_COOKIE="csrftoken=" + "a" * 32,
    )
    assert status == 400 and one_line_error(content)
    assert tracebacks(caplog) == []
