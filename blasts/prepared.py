"""A cursor for the statements the hot paths run again and again (a ledger write, a link's click):
on PostgreSQL, prepared once a connection.

Django binds parameters on the client (psycopg's ClientCursor writes the values into the text) and
so never prepares: PostgreSQL parses and plans each execution anew. For a link's click that was most
of the database's CPU (bench/links.py). `prepared_cursor` is Django's cursor wrapper (its errors,
its query log and execute_wrappers) around psycopg's own cursor, which sends the parameters apart
from the text; the connection prepares such a statement the first time it runs it
(`prepare_threshold` 0, blastsite/settings.py), keeping the last 100 it prepared. Behind a
transaction pooler (DATABASE_POOLED) the threshold is None: a statement prepared on one server
connection is unknown on the next, so there nothing is prepared and each runs as before.

Parameters sent apart keep their Python type: a number or a time is typed, but text and None go as
`unknown`, which PostgreSQL resolves from the column they are compared with or assigned to, and in a
SELECT list (INSERT … SELECT) as text: there they need a CAST to the column's type (`param_type`).
"""

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.utils import CursorWrapper

TEXT = ("CharField", "TextField")


def prepared_cursor() -> CursorWrapper:
    """A cursor of the thread's connection whose statements PostgreSQL keeps prepared; Django's on SQLite."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        return db.cursor()
    # What db.cursor() does, with psycopg's server-side binding cursor in place of Django's.
    db.close_if_health_check_failed()
    db.ensure_connection()
    with db.wrap_database_errors:
        return db._prepare_cursor(psycopg.Cursor(db.connection))


def param_type(field, db) -> str:
    """The type to CAST a parameter to for `field`'s column. Text as text, not varchar(n), which would
    cut it silently where the column refuses it."""
    return "text" if field.get_internal_type() in TEXT else field.db_type(db)
