"""/l/<code>: a tracked link's redirect, answered before Django's request handling.

Why not a view, or a middleware first in the stack: on the bench's two cores a bare Django view
behind every middleware answers about 2,000 requests a second (bench/floor.py), and the redirect must
do as much while it also reads and writes. Django's handler alone (the request and response objects,
the request_started/finished signals, and the connection health check they arm: one SELECT 1 a
request) costs more than the redirect's budget. Measured: as a middleware first in the stack the
redirect took 550 microseconds of CPU in process and reached 0.43x the bare view under bench/links.py;
here 130-180 and 0.61-0.69x, in the same runs as the floor. So blastsite/wsgi.py hands /l/ to
`link_application`, a plain WSGI application that calls one service, link_click (one statement on
PostgreSQL), and answers. It reads no cookie and sets none, takes no form, names no person and renders
no page but a static one, so nothing the middlewares guard is at stake.

Connections: it uses the thread's own Django connection, as a view would. Without the signals a
connection the database dropped is noticed when a statement fails: it is closed and the request
tried once more on a new one. CONN_MAX_AGE is applied by the other requests the thread serves.
"""

import re

from django.core.handlers.wsgi import get_str_from_wsgi  # the header's UTF-8, as Django reads it
from django.db import InterfaceError, OperationalError, connection
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.encoding import iri_to_uri

from .links import Followed, link_click

PREFIX = "/l/"
# secrets.token_urlsafe's alphabet, up to the column's 22 characters: anything else is unknown
# without a query.
CODE = re.compile(r"/l/([A-Za-z0-9_-]{1,22})")
NOT_FOUND = b"Not found\n"


def link_application(environ, start_response) -> list[bytes]:
    """302 to the link's original (its Click kept), 410 and a page once it has expired, 404 for an unknown
    code; no log line, so a flood of made-up codes floods nothing."""
    if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
        return _answer(environ, start_response, "405 Method Not Allowed", [("Allow", "GET, HEAD")], b"")
    match = CODE.fullmatch(environ["PATH_INFO"])
    followed = match and _followed(match[1], get_str_from_wsgi(environ, "HTTP_USER_AGENT", ""))
    if not followed:
        return _answer(environ, start_response, "404 Not Found", [("Content-Type", "text/plain")], NOT_FOUND)
    if followed.expired:
        page = render_to_string("blasts/link_expired.html").encode()
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
        ]
        return _answer(environ, start_response, "410 Gone", headers, page)
    # no-store: every click reaches us, none is answered by a cache on the way.
    headers = [("Location", iri_to_uri(followed.url)), ("Cache-Control", "no-store")]
    return _answer(environ, start_response, "302 Found", headers, b"")


def _followed(code: str, user_agent: str) -> Followed | None:
    try:
        return link_click(code, user_agent, timezone.now())
    except (InterfaceError, OperationalError):
        if connection.in_atomic_block or connection.connection is None:
            raise
        connection.close()  # dropped by the database (a restart, an idle timeout): a new one, once
        return link_click(code, user_agent, timezone.now())


def _answer(environ, start_response, status: str, headers: list, body: bytes) -> list[bytes]:
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]
