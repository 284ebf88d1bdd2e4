"""/l/<code>: a tracked link's redirect, answered before Django's request handling.

Why not a view, or a middleware first in the stack: on the bench's two cores a bare Django view
behind every middleware answers about 2,000 requests a second (bench/floor.py), and the redirect must
do as much while it also reads and writes. Django's handler alone (the request and response objects,
the request_started/finished signals, and the connection health check they arm: one SELECT 1 a
request) costs more than the redirect's budget. Measured: as a middleware first in the stack the
redirect took 550 microseconds of CPU in process and reached 0.43x the bare view under bench/links.py;
here 130-180 and 0.61-0.69x, in the same runs as the floor. So blastsite/wsgi.py hands /l/ to
`link_application`, a plain WSGI application that calls one service, link_click (one prepared
statement on PostgreSQL), and answers. It reads no cookie and sets none, takes no form, names no person
and renders no page but a static one, so nothing the middlewares guard is at stake. What to answer is
decided here (link_code, link_answer) for both servers of the redirect: this one and
`manage.py serve_links` (link_server.py), which takes more clicks a second on the same cores.

Connections: it uses the thread's own Django connection, as a view would. Without the signals a
connection the database dropped is noticed when a statement fails: it is closed and the request
tried once more on a new one. CONN_MAX_AGE is applied by the other requests the thread serves.
"""

import re
from http import HTTPStatus
from typing import NamedTuple

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


class Answer(NamedTuple):
    """An answer to a request for a link, whichever server gives it (this one or link_server.py)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


NOT_FOUND = Answer(404, [("Content-Type", "text/plain")], b"Not found\n")
NOT_ALLOWED = Answer(405, [("Allow", "GET, HEAD")], b"")


def link_code(method: str, path: str) -> str | Answer:
    """The code a request asks for, or the answer when it asks for none (no query either way)."""
    if method not in ("GET", "HEAD"):
        return NOT_ALLOWED
    match = CODE.fullmatch(path)
    return match[1] if match else NOT_FOUND


def link_answer(followed: Followed | None) -> Answer:
    """302 to the link's original, 410 and a page once it has expired, 404 for an unknown code."""
    if not followed:
        return NOT_FOUND
    if followed.expired:
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
        ]
        return Answer(410, headers, render_to_string("blasts/link_expired.html").encode())
    # no-store: every click reaches us, none is answered by a cache on the way.
    return Answer(302, [("Location", iri_to_uri(followed.url)), ("Cache-Control", "no-store")], b"")


def reconnecting(work, *args):
    """`work(*args)` on the thread's Django connection; once more on a new one if the database dropped
    it (a restart, an idle timeout): without Django's request signals nothing else notices."""
    try:
        return work(*args)
    except (InterfaceError, OperationalError):
        if connection.in_atomic_block or connection.connection is None:
            raise
        connection.close()
        return work(*args)


def link_application(environ, start_response) -> list[bytes]:
    """The redirect as a WSGI application; no log line of its own (gunicorn's access log has one)."""
    method = environ["REQUEST_METHOD"]
    answer = link_code(method, environ["PATH_INFO"])
    if not isinstance(answer, Answer):
        agent = get_str_from_wsgi(environ, "HTTP_USER_AGENT", "")
        answer = link_answer(reconnecting(link_click, answer, agent, timezone.now()))
    status = f"{answer.status} {HTTPStatus(answer.status).phrase}"
    start_response(status, [*answer.headers, ("Content-Length", str(len(answer.body)))])
    return [b"" if method == "HEAD" else answer.body]
