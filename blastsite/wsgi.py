"""WSGI entry point (gunicorn blastsite.wsgi, and runserver through WSGI_APPLICATION).

Django builds the request object outside its middleware, so what it raises there is no 4xx but
a 500 with a traceback, on every URL. `application` refuses such requests first, in one line of
JSON: a charset it cannot decode the query string with, a Content-Type or Content-Length it
cannot read, or more query fields than DATA_UPLOAD_MAX_NUMBER_FIELDS.
"""

import codecs
import json
import os
import warnings

from django.core.exceptions import TooManyFieldsSent
from django.core.wsgi import get_wsgi_application
from django.utils.http import parse_header_parameters

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blastsite.settings")

django_application = get_wsgi_application()

from blasts.tracking.link_views import PREFIX as LINK_PREFIX  # noqa: E402 (needs Django set up)
from blasts.tracking.link_views import link_application  # noqa: E402

# Every printable ASCII character: a charset that reads these bytes back as the same text reads a
# query string as Django expects. UTF-16/32, UTF-7, EBCDIC and punycode garble it (the right
# webhook token came out as CJK text and got a 401).
_ASCII = bytes(range(0x20, 0x7F))


def _ascii_compatible(charset: str) -> bool:
    try:
        # Decoding with a codec that is not a text encoding (rot13, base64, zlib) is a LookupError.
        if not codecs.lookup(charset)._is_text_encoding:
            return False
        with warnings.catch_warnings():  # unicode_escape warns of the backslash it reads as an escape
            warnings.simplefilter("ignore", DeprecationWarning)
            return _ASCII.decode(charset) == _ASCII.decode() and _ASCII.decode().encode(charset) == _ASCII
    except (LookupError, ValueError):  # unknown; "undefined" and idna raise UnicodeError, a ValueError
        return False


def _refusal(environ) -> tuple[str, str] | None:
    """The status and message for a request Django cannot build, None for the rest."""
    try:
        int(environ.get("CONTENT_LENGTH") or 0)  # as Django reads it for request.body
    except ValueError:  # "1e3", or over 4,300 digits; gunicorn refuses these, runserver does not
        return "400 Bad Request", "Content-Length is not a number."
    try:
        _, params = parse_header_parameters(environ.get("CONTENT_TYPE", ""))  # Django's own parser
    except ValueError:  # a bad RFC 2231 parameter, such as charset*=x'y'%E9
        return "400 Bad Request", "The Content-Type header cannot be read."
    if "charset" in params and not _ascii_compatible(params["charset"]):
        return (
            "415 Unsupported Media Type",
            "Unsupported charset: send UTF-8 (Content-Type: application/json; charset=utf-8).",
        )
    return None


def _answer(start_response, status: str, message: str) -> list[bytes]:
    body = json.dumps({"error": message}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    if environ.get("PATH_INFO", "").startswith(LINK_PREFIX):  # tracked links skip Django's handler: see there
        return link_application(environ, start_response)
    if refusal := _refusal(environ):
        return _answer(start_response, *refusal)
    try:
        return django_application(environ, start_response)
    except TooManyFieldsSent:
        # Raised while Django builds the request (its middleware answers 400 for the rest): given
        # a charset, it parses the query string at once.
        return _answer(start_response, "400 Bad Request", "Too many fields in the query string.")
