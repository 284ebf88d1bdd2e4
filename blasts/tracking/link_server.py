"""The tracked links' redirect on a server of its own: `manage.py serve_links` (PostgreSQL only).

The web serves /l/ too (blastsite/wsgi.py), which is enough for a small team's clicks. This server is
for when PUBLIC_BASE_URL's /l/ must take many clicks on few cores: gunicorn's Python HTTP handling and
its hand-off to a thread cost more CPU than the click itself. Here uvicorn parses HTTP in C
(httptools) on an event loop (uvloop), and each request runs the click's one prepared statement
(links.py) on a few asynchronous connections of its own, with no thread in between. Only a person's
first click, which the ledger must judge, goes to a thread and through recipient_advance, like every
other status change. Both servers answer alike: link_views.link_code and link_answer decide, and the
tests ask both the same questions.

What it does not do: no cookie, no session, no form, no log line a request (a flood of made-up codes
floods nothing), no page but the expired one. A database that cannot be reached is a 503, logged once
a request as one line.
"""

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import django
from django.apps import apps

if not apps.ready:  # uvicorn's workers import this module in a fresh interpreter
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blastsite.settings")
    django.setup()

import psycopg
from django.conf import settings
from django.db import OperationalError, connections
from django.utils import timezone

from .link_views import Answer, link_answer, link_code, reconnecting
from .links import LinkRequest, first_click_read, link_followed

logger = logging.getLogger(__name__)

UNAVAILABLE = Answer(503, [("Content-Type", "text/plain"), ("Retry-After", "5")], b"Try again shortly\n")


class Database:
    """A few autocommit connections, each lent to one request at a time (a queue, not a pool library:
    there is nothing else to manage). One the database dropped is replaced, and the request tried once
    more on the new one."""

    def __init__(self, size: int):
        self.size, self.made, self.idle = size, 0, asyncio.Queue()

    async def fetchone(self, sql: str, params: list) -> tuple | None:
        try:
            return await self._fetchone(sql, params)
        except psycopg.OperationalError:
            return await self._fetchone(sql, params)

    async def _fetchone(self, sql: str, params: list) -> tuple | None:
        conn = await self._take()
        try:
            cursor = await conn.execute(sql, params)  # prepared at its first run (blasts/prepared.py)
            return await cursor.fetchone()
        except psycopg.OperationalError:
            self.made -= 1
            await conn.close()
            conn = None
            raise
        finally:
            if conn is not None:
                self.idle.put_nowait(conn)

    async def _take(self) -> psycopg.AsyncConnection:
        if self.idle.empty() and self.made < self.size:
            self.made += 1
            try:
                return await psycopg.AsyncConnection.connect(**_connection_params(), autocommit=True)
            except BaseException:
                self.made -= 1
                raise
        return await self.idle.get()

    async def close(self) -> None:
        while not self.idle.empty():
            await self.idle.get_nowait().close()
        self.made = 0


def _connection_params() -> dict:
    """Django's own connection parameters (database, credentials, options, prepare_threshold) for an
    asynchronous psycopg connection."""
    params = connections["default"].get_connection_params()
    params.pop("cursor_factory", None)  # Django's, for synchronous connections
    return params


class LinkServer:
    """The ASGI application: one per worker process."""

    def __init__(self, size: int | None = None):
        # Connections a worker keeps (LINKS_DATABASE_CONNECTIONS): enough for the database's cores to stay
        # busy while others wait on the network; more only queue inside PostgreSQL.
        self.database = Database(size or settings.LINKS_DATABASE_CONNECTIONS)
        # A first click's ledger write runs here, on the thread's Django connection: one thread, so
        # that connection is closed at shutdown (a first click is a few milliseconds; they queue).
        self.ledger = ThreadPoolExecutor(1, thread_name_prefix="first-click")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            answer = link_code(scope["method"], scope["path"])
            if not isinstance(answer, Answer):
                answer = await self.click(answer, _header(scope, b"user-agent"))
            headers = [*answer.headers, ("Content-Length", str(len(answer.body)))]
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [(name.lower().encode(), value.encode("latin-1")) for name, value in headers],
                }
            )
            await send(
                {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else answer.body}
            )

    async def click(self, code: str, user_agent: str) -> Answer:
        now = timezone.now()
        try:
            followed = link_followed(
                await self.database.fetchone(*LinkRequest.of(code, user_agent, now).statement())
            )
            if followed and followed.reads:
                await asyncio.get_running_loop().run_in_executor(
                    self.ledger, reconnecting, first_click_read, followed.reads, code, now
                )
        except (psycopg.OperationalError, OperationalError) as error:
            logger.warning("A link's click: the database cannot be reached: %s", str(error).splitlines()[0])
            return UNAVAILABLE
        return link_answer(followed)

    async def lifespan(self, receive, send) -> None:
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await self.database.close()
        await asyncio.get_running_loop().run_in_executor(self.ledger, connections.close_all)
        self.ledger.shutdown()
        await send({"type": "lifespan.shutdown.complete"})


def _header(scope, name: bytes) -> str:
    """A request header's value read as UTF-8, as Django reads one; empty when absent."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("utf-8", "replace")
    return ""


application = LinkServer()
