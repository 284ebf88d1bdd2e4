"""Tracked links: each http(s) URL of a message goes out as PUBLIC_BASE_URL/l/<code>, one code per
recipient and link, and a request for it is kept as a Click before it is sent on to the original.

A code is 96 random bits (secrets.token_urlsafe(12), 16 characters): it names no person and cannot
be guessed. A click proves the message was received and read, like a reply; a link preview (WhatsApp's
or the gateway's fetch) proves nothing, so it is kept with `preview` set and counted nowhere.
"""

import re
import secrets
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import connection

from ..models import BlastRecipient, Click, Link, StatusHistory
from ..prepared import prepared_cursor
from ..services import recipient_advance
from ..statuses import can_move
from ..text import clean_text, fit

Status = BlastRecipient.Status

# A URL runs to the first space or character a URL cannot hold; what a sentence or WhatsApp's
# formatting (*bold*, _italic_, ~strike~) puts after it is no part of it.
_URL = re.compile(r"https?://[^\s<>\"'`{}|\\^]+", re.IGNORECASE)
_TRAILING = ".,;:!?*_~"
_CLOSING = {")": "(", "]": "["}

# Who fetches a link only to show its preview: WhatsApp ("WhatsApp/2.23.20.0 A"), Facebook's and the
# other apps' unfurlers, search engines, and the HTTP libraries a gateway fetches with. People's
# browsers say none of these words (not even a CUBOT phone's, nor Pinterest's in-app browser).
PREVIEW_AGENTS = re.compile(
    r"WhatsApp/|facebookexternalhit|facebookcatalog|meta-externalagent|Slackbot|Slack-ImgProxy|"
    r"TelegramBot|Twitterbot|Discordbot|LinkedInBot|SkypeUriPreview|Googlebot|bingbot|Applebot|"
    r"redditbot|Pinterestbot|Embedly|Iframely|vkShare|crawler|spider|python-requests|python-httpx|"
    r"aiohttp|axios|node-fetch|undici|Go-http-client|okhttp|curl/|Wget/",
    re.IGNORECASE,
)


def _url_spans(text: str) -> list[tuple[int, int]]:
    """Where each http(s) URL of `text` starts and ends, trailing punctuation left out."""
    spans = []
    for match in _URL.finditer(text):
        start, end = match.span()
        while end > start:
            last = text[end - 1]
            opening = _CLOSING.get(last)
            # A closing bracket belongs to the URL only if it closes one the URL opened (Wikipedia's
            # /wiki/Mercury_(planet)); a sentence's "(see https://x.com)" keeps its own.
            if last in _TRAILING or (
                opening and text.count(opening, start, end) < text.count(last, start, end)
            ):
                end -= 1
            else:
                break
        if text.find("://", start) + 3 < end:  # more than the scheme
            spans.append((start, end))
    return spans


def message_urls(text: str) -> list[str]:
    """The http(s) URLs of a message, in order: those links_render tracks."""
    return [text[start:end] for start, end in _url_spans(text)]


def links_render(recipient: BlastRecipient, text: str) -> str:
    """`text` with each http(s) URL replaced by the recipient's tracked link, made now or, for a retried
    send, the one made before; as written when the blast does not track links or PUBLIC_BASE_URL is empty.

    Two statements (insert the missing, read them all back), none for a text without a URL.
    """
    spans = _url_spans(text)
    if not spans or not settings.PUBLIC_BASE_URL or not recipient.blast.track_links:
        return text
    # A code already taken (a 2^-96 chance) is skipped like a position already made, so its
    # position is missing below: the KeyError stops this send before its SENDING, so the recipient
    # stays queued and its claim, once expired, sends it with new codes.
    Link.objects.bulk_create(
        [
            Link(code=secrets.token_urlsafe(12), recipient_id=recipient.pk, position=n, url=text[start:end])
            for n, (start, end) in enumerate(spans)
        ],
        ignore_conflicts=True,
    )
    codes = dict(
        Link.objects.filter(recipient_id=recipient.pk, position__lt=len(spans)).values_list(
            "position", "code"
        )
    )
    parts, done = [], 0
    for n, (start, end) in enumerate(spans):
        parts += [text[done:start], f"{settings.PUBLIC_BASE_URL}/l/{codes[n]}"]
        done = end
    return "".join([*parts, text[done:]])


class Followed(NamedTuple):
    """A known link's answer: where it leads, or that it has expired; and whom its click moves to read."""

    url: str
    expired: bool
    reads: int | None = None  # the recipient, on a person's first click the ledger may move


# The one lookup of a request: the link by its primary key, and of its recipient only what a click
# needs (never the blast). The send time is sent_at, or until that is stored the link's making, which
# comes right before the send.
_LOOKUP = f"""
    SELECT l.url, l.created_at < %s, l.recipient_id, COALESCE(r.sent_at, l.created_at) > %s,
           r.clicked_at IS NULL, r.status
    FROM {Link._meta.db_table} l JOIN {BlastRecipient._meta.db_table} r ON r.id = l.recipient_id
    WHERE l.code = %s"""
_CLICK = f"INSERT INTO {Click._meta.db_table} (link_id, at, user_agent, preview)"
_FIRST = f"UPDATE {BlastRecipient._meta.db_table} AS r SET clicked_at = %s"


def _clicked_in_one_statement_sql(by_agent: bool) -> str:
    # The user agent's verdict is written in, not a parameter: a custom plan would fold it away and
    # look cheaper than the generic one, so PostgreSQL would plan the statement again every time.
    agent = "TRUE" if by_agent else "FALSE"
    return f"""
    WITH link (url, expired, recipient, early, unclicked, status) AS ({_LOOKUP}),
    click AS ({_CLICK} SELECT %s, %s, %s, early OR {agent} FROM link WHERE NOT expired),
    first AS (
        {_FIRST} FROM link
        WHERE r.id = link.recipient AND r.clicked_at IS NULL AND NOT (link.expired OR link.early OR {agent})
        RETURNING 1
    ),
    unsynced AS (SELECT set_config('synchronous_commit', 'off', true))
    SELECT url, expired, recipient, status, EXISTS (SELECT FROM first) FROM link, unsynced"""


# On PostgreSQL the lookup, the Click and the first click's clicked_at are one prepared statement (by
# the user agent's verdict; blasts/prepared.py): one round trip a request, planned once a connection, as
# the redirect's speed needs (bench/links.py). For an unknown code the INSERT and UPDATE find no row.
# Racing first clicks: the UPDATE waits for the other's row lock, then finds clicked_at set, so one of
# them counts. Its commit does not wait for the WAL to reach the disk (synchronous_commit off for this
# transaction alone, as SET LOCAL would). Measured on one connection (bench machine, 400 clicks each):
# prepared, a click that is not a first costs the database 0.18-0.23 ms of CPU, against 1.0-1.1 ms
# parsed and planned every time. A crash of the database server (not of ours) can lose the clicks
# of its last 0.6 s (3 x wal_writer_delay); what it keeps is consistent, and every other write of the
# app still commits synchronously.
_CLICKED_IN_ONE_STATEMENT = {by_agent: _clicked_in_one_statement_sql(by_agent) for by_agent in (False, True)}
# Still the sender's: moving it would take the row from under the send (its PENDING would not apply).
_UNSENT = frozenset({Status.QUEUED, Status.SENDING})


class LinkRequest(NamedTuple):
    """A request for a link, ready for the database: the statement's parameters (PostgreSQL's one
    statement; SQLite's steps take them in parts)."""

    lookup: list
    click: list
    at: datetime
    by_agent: bool

    @classmethod
    def of(cls, code: str, user_agent: str, now: datetime) -> "LinkRequest":
        adapt = connection.ops.adapt_datetimefield_value
        lookup = [
            adapt(now - timedelta(days=settings.LINK_EXPIRY_DAYS)),
            adapt(now - timedelta(seconds=settings.LINK_PREVIEW_SECONDS)),
            code,
        ]
        at = adapt(now)
        click = [code, at, fit(Click, "user_agent", clean_text(user_agent))]
        return cls(lookup, click, at, PREVIEW_AGENTS.search(user_agent) is not None)

    def statement(self) -> tuple[str, list]:
        """The one statement (PostgreSQL) and its parameters; its row is what link_followed reads."""
        return _CLICKED_IN_ONE_STATEMENT[self.by_agent], [*self.lookup, *self.click, self.at]


def link_click(code: str, user_agent: str, now: datetime) -> Followed | None:
    """A request for /l/<code> at `now`: None for an unknown code (nothing written); a known one's URL,
    its Click kept unless the link has expired.

    A person's first click sets the recipient's clicked_at (once, whatever clicks race) and moves it to
    READ_ACK through the ledger when the ledger allows (DELIVERY_ACK and below, FAILED and UNKNOWN:
    the click proves it arrived). A preview, by its user agent or by coming within LINK_PREVIEW_SECONDS
    of the send, is kept with `preview` set and changes nothing else.
    """
    request = LinkRequest.of(code, user_agent, now)
    if connection.vendor == "postgresql":
        with prepared_cursor() as cursor:
            cursor.execute(*request.statement())
            found = cursor.fetchone()
    else:
        with connection.cursor() as cursor:
            found = _clicked_in_steps(cursor, request)
    followed = link_followed(found)
    if followed and followed.reads:
        first_click_read(followed.reads, code, now)
    return followed


def link_followed(found: tuple | None) -> Followed | None:
    """What the click's statement found: None for an unknown code, else where the link leads, whether
    it has expired, and the recipient a first click moves to READ_ACK (`reads`), if any."""
    if found is None:
        return None
    url, expired, recipient, status, first = found
    reads = first and status not in _UNSENT and can_move(status, Status.READ_ACK)
    return Followed(url, expired=bool(expired), reads=recipient if reads else None)


def first_click_read(recipient: int, code: str, now: datetime) -> None:
    """A recipient's first click moves it to READ_ACK, through the ledger (which judges it again, under
    the row's lock)."""
    recipient_advance(
        recipient=recipient,
        status=Status.READ_ACK,
        source=StatusHistory.Source.CLICK,
        occurred_at=now,
        raw={"link": code},
    )


def _clicked_in_steps(cursor, request: LinkRequest) -> tuple | None:
    """What _CLICKED_IN_ONE_STATEMENT does and returns, in up to three (SQLite has no INSERT in a WITH)."""
    cursor.execute(_LOOKUP, request.lookup)
    if (found := cursor.fetchone()) is None:
        return None
    url, expired, recipient, early, unclicked, status = found
    first = False
    if not expired:
        cursor.execute(f"{_CLICK} VALUES (%s, %s, %s, %s)", [*request.click, bool(early) or request.by_agent])
        if unclicked and not (early or request.by_agent):
            cursor.execute(f"{_FIRST} WHERE id = %s AND clicked_at IS NULL", [request.at, recipient])
            first = cursor.rowcount == 1
    return url, expired, recipient, status, first
