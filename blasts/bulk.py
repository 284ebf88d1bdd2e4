"""Many rows in one statement: each row's own values, the statement's text the same for any number.

On PostgreSQL the values travel as one array a column (`unnest`), so the text stays short and fixed
and psycopg binds a few arrays rather than thousands of parameters (half the CPU of a VALUES list,
bench/webhooks.py's applier). SQLite has no arrays: there a VALUES list (UPDATE … FROM, SQLite 3.33+)
and Django's bulk_create.
"""

from django.db import DEFAULT_DB_ALIAS, connections

from .prepared import param_type


def _columns(model, names: list[str] | None) -> list:
    if names is None:
        return [field for field in model._meta.concrete_fields if not field.primary_key]
    return [model._meta.get_field(name) for name in names]


def _arrays(columns, rows, db) -> list[list]:
    return [[f.get_db_prep_save(f.value_from_object(row), db) for row in rows] for f in columns]


def rows_update(model, rows: list, fields: list[str]) -> None:
    """Write `fields` of many saved rows of `model`, each its own values, in one UPDATE."""
    if not rows:
        return
    db = connections[DEFAULT_DB_ALIAS]
    columns = [model._meta.pk, *_columns(model, fields)]
    names = [db.ops.quote_name(f.column) for f in columns]
    table, key = db.ops.quote_name(model._meta.db_table), names[0]
    assign = ", ".join(f"{name} = v.{name}" for name in names[1:])
    if db.vendor == "postgresql":
        arrays = ", ".join(f"%s::{param_type(f, db)}[]" for f in columns)
        sql = f"UPDATE {table} SET {assign} FROM unnest({arrays}) AS v ({', '.join(names)}) WHERE {table}.{key} = v.{key}"
        params = _arrays(columns, rows, db)
    else:
        row = "(" + ", ".join(["%s"] * len(columns)) + ")"
        sql = (
            f"WITH v ({', '.join(names)}) AS (VALUES {', '.join([row] * len(rows))}) "
            f"UPDATE {table} SET {assign} FROM v WHERE {table}.{key} = v.{key}"
        )
        params = [value for values in zip(*_arrays(columns, rows, db), strict=True) for value in values]
    with db.cursor() as cursor:
        cursor.execute(sql, params)


def rows_insert(model, rows: list) -> None:
    """Insert many new rows of `model` (ids from the database, not read back) in one INSERT."""
    if not rows:
        return
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        model.objects.bulk_create(rows)
        return
    columns = _columns(model, None)
    names = ", ".join(db.ops.quote_name(f.column) for f in columns)
    arrays = ", ".join(f"%s::{param_type(f, db)}[]" for f in columns)
    sql = f"INSERT INTO {db.ops.quote_name(model._meta.db_table)} ({names}) SELECT * FROM unnest({arrays})"
    with db.cursor() as cursor:
        cursor.execute(sql, _arrays(columns, rows, db))
