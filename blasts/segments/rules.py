"""What a segment's rules mean, as SQL: each rule one condition on a contact, combined with AND or
OR, opted-out numbers always left out, the whole audience one query (segment_members).

A rule is a JSON object; `kind` says which:
  {"kind": "tag", "op": "is" | "is_not", "value": "VIP"}
  {"kind": "attribute", "op": "equals" | "contains" | "is_empty", "key": "city", "value": "Ipoh"}
  {"kind": "reached" | "not_reached", "stage": "read", "tag": "Raya", "follow_up_stage": "", "days": 30}
      reached (or never reached) the funnel stage in some blast, optionally only blasts with that tag,
      on that follow-up stage, or where the stage was reached in the last `days` days
  {"kind": "never_messaged"}                  sent nothing, ever
  {"kind": "messaged_fewer", "times": 3, "days": 30}   sent fewer than `times` messages in `days` days
Equals and contains ignore case; so do the tag and follow-up stage of a blast.
"""

import json
from collections.abc import Iterable
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db.models import (
    Count,
    Exists,
    F,
    Func,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
    Value,
)
from django.db.models.functions import Coalesce
from django.db.models.lookups import Exact, IContains, IExact, IsNull
from django.utils import timezone

from ..models import BlastRecipient, Contact, OptOut, Segment
from ..recipients import attribute_key
from ..statuses import STAGE_FLOOR, STAGE_TIME_FIELDS
from ..text import clean_text

KINDS = {
    "tag": "Tag",
    "attribute": "Attribute",
    "reached": "Reached a stage",
    "not_reached": "Never reached a stage",
    "never_messaged": "Never messaged",
    "messaged_fewer": "Messaged fewer than",
}
OPS = {"tag": ("is", "is_not"), "attribute": ("equals", "contains", "is_empty")}
MAX_RULES = 20
MAX_DAYS = 3650
MAX_TIMES = 1000
VALUE_MAX = 200
STAGE_TIME = {stage: dict(STAGE_TIME_FIELDS)[floor] for stage, floor in STAGE_FLOOR.items()}


class RuleError(ValueError):
    """What is wrong with one rule, and the part of it at fault (`field`: kind, op, key, value, …)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _choice(rule: dict, name: str, choices) -> str:
    value = rule.get(name)
    if not isinstance(value, str) or value not in choices:  # a list or an object is no choice either
        raise RuleError(name, f"{name} must be one of {', '.join(choices)}")
    return value


def _text(rule: dict, name: str, required: bool) -> str:
    value = rule.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise RuleError(name, f"{name.replace('_', ' ')} must be a text")
    value = clean_text(str(value)).strip()  # a lone surrogate cannot be stored: it becomes U+FFFD
    if "\x00" in str(rule.get(name)) or len(value) > VALUE_MAX:
        raise RuleError(name, f"{name.replace('_', ' ')} must be a text of at most {VALUE_MAX} characters")
    if required and not value:
        raise RuleError(name, f"give the {name.replace('_', ' ')}")
    return value


def _number(rule: dict, name: str, required: bool, low: int, high: int) -> int | None:
    value = rule.get(name)
    if value in (None, "") and not required:
        return None
    if isinstance(value, str) and len(value) < 20 and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RuleError(name, f"{name} must be a whole number from {low} to {high}")
    return value


def rule_clean(rule) -> dict:
    """One rule in its stored shape, or RuleError saying what is wrong with it (and where)."""
    if not isinstance(rule, dict):
        raise RuleError("kind", "a rule is an object with a kind")
    kind = _choice(rule, "kind", KINDS)
    if kind == "tag":
        return {"kind": kind, "op": _choice(rule, "op", OPS[kind]), "value": _text(rule, "value", True)}
    if kind == "attribute":
        op = _choice(rule, "op", OPS[kind])
        key = attribute_key(_text(rule, "key", True))
        if not key:
            raise RuleError("key", "the key must have a letter or digit")
        value = "" if op == "is_empty" else _text(rule, "value", True)
        return {"kind": kind, "op": op, "key": key, "value": value}
    if kind in ("reached", "not_reached"):
        return {
            "kind": kind,
            "stage": _choice(rule, "stage", STAGE_FLOOR),
            "tag": _text(rule, "tag", False),
            "follow_up_stage": _text(rule, "follow_up_stage", False),
            "days": _number(rule, "days", False, 1, MAX_DAYS),
        }
    if kind == "messaged_fewer":
        return {
            "kind": kind,
            "times": _number(rule, "times", True, 1, MAX_TIMES),
            "days": _number(rule, "days", True, 1, MAX_DAYS),
        }
    return {"kind": kind}


def rules_clean(rules) -> list[dict]:
    """The rules in their stored shape, or ValidationError naming each wrong rule ("Rule 2: ...")."""
    if not isinstance(rules, list):
        raise ValidationError("The rules are a list.")
    if len(rules) > MAX_RULES:
        raise ValidationError(f"At most {MAX_RULES} rules.")
    clean, errors = [], []
    for number, rule in enumerate(rules, start=1):
        try:
            clean.append(rule_clean(rule))
        except ValueError as exc:
            errors.append(f"Rule {number}: {exc}.")
    if errors:
        raise ValidationError(errors)
    return clean


class AttributeText(Func):
    """A contact's attribute as text (NULL when it has none). Not `attributes__<key>`: that reads a
    key "2024" as an array index and a key "contains" as a lookup."""

    output_field = TextField()

    def __init__(self, key: str):
        super().__init__(F("attributes"))
        self.key = key

    def as_sql(self, compiler, connection, **extra):  # SQLite: a JSON path, the key quoted
        column, params = compiler.compile(self.source_expressions[0])
        return f"JSON_EXTRACT({column}, %s)", (*params, "$." + json.dumps(self.key))

    def as_postgresql(self, compiler, connection, **extra):
        column, params = compiler.compile(self.source_expressions[0])
        return f"({column} ->> %s)", (*params, self.key)


def _history(rule: dict, now) -> QuerySet:
    """The contact's recipient rows that reached the rule's stage (in the blasts and days it names)."""
    rows = BlastRecipient.objects.filter(contact=OuterRef("pk"), status__gte=STAGE_FLOOR[rule["stage"]])
    if rule["tag"]:
        rows = rows.filter(blast__tag__iexact=rule["tag"])
    if rule["follow_up_stage"]:
        rows = rows.filter(blast__follow_up_stage__iexact=rule["follow_up_stage"])
    if rule["days"]:
        rows = rows.filter(**{f"{STAGE_TIME[rule['stage']]}__gte": now - timedelta(days=rule["days"])})
    return rows


def _condition(rule: dict, now) -> Q:
    """The rule as a condition on a contact (all kinds but messaged_fewer)."""
    kind = rule["kind"]
    if kind == "tag":
        tagged = Exists(
            Contact.tags.through.objects.filter(contact=OuterRef("pk"), contacttag__name=rule["value"])
        )
        return Q(tagged) if rule["op"] == "is" else ~Q(tagged)
    if kind == "attribute":
        value = AttributeText(rule["key"])
        if rule["op"] == "is_empty":
            return Q(IsNull(value, True)) | Q(Exact(value, ""))
        return Q((IExact if rule["op"] == "equals" else IContains)(value, rule["value"]))
    if kind == "reached":
        return Q(Exists(_history(rule, now)))
    if kind == "not_reached":
        return ~Q(Exists(_history(rule, now)))
    # never_messaged (messaged_fewer is a count segment_members annotates)
    return ~Q(Exists(BlastRecipient.objects.filter(contact=OuterRef("pk"), status__gte=STAGE_FLOOR["sent"])))


def segment_members(match: str, rules: Iterable[dict], *, with_opted_out: bool = False) -> QuerySet:
    """The contacts the rules choose (all of them, or any, per `match`), never an opted-out number
    (unless `with_opted_out`: the contact list shows everyone): one query however many rules."""
    now = timezone.now()
    rules = list(rules)
    members = Contact.objects.all()
    if not with_opted_out:
        members = members.exclude(Exists(OptOut.objects.filter(phone=OuterRef("phone"))))
    fewer = [rule for rule in rules if rule["kind"] == "messaged_fewer"]
    for index, rule in enumerate(fewer):  # each count a subquery of its own, named for its condition
        recent = BlastRecipient.objects.filter(
            contact=OuterRef("pk"),
            status__gte=STAGE_FLOOR["sent"],
            sent_at__gte=now - timedelta(days=rule["days"]),
        )
        count = Subquery(recent.order_by().values("contact").annotate(n=Count("pk")).values("n"))
        members = members.alias(
            **{f"messaged_{index}": Coalesce(count, Value(0), output_field=IntegerField())}
        )
    conditions = []
    for rule in rules:
        if rule["kind"] == "messaged_fewer":
            conditions.append(Q(**{f"messaged_{fewer.index(rule)}__lt": rule["times"]}))
        else:
            conditions.append(_condition(rule, now))
    if not conditions:
        return members
    combined = conditions[0]
    for condition in conditions[1:]:
        combined = combined & condition if match == Segment.Match.ALL else combined | condition
    return members.filter(combined)


def rule_words(rule: dict) -> str:
    """A rule as a sentence for the pages: "Tag is VIP", "Reached read in a blast tagged Raya…"."""
    kind = rule["kind"]
    if kind == "tag":
        return f"Tag {'is' if rule['op'] == 'is' else 'is not'} “{rule['value']}”"
    if kind == "attribute":
        if rule["op"] == "is_empty":
            return f"{rule['key']} is empty"
        return f"{rule['key']} {rule['op']} “{rule['value']}”"
    if kind in ("reached", "not_reached"):
        words = [f"{'Reached' if kind == 'reached' else 'Never reached'} {rule['stage']}"]
        if rule["tag"]:
            words.append(f"in a blast tagged “{rule['tag']}”")
        if rule["follow_up_stage"]:
            words.append(f"on the stage “{rule['follow_up_stage']}”")
        if rule["days"]:
            words.append(f"in the last {rule['days']} days")
        return " ".join(words)
    if kind == "never_messaged":
        return "Never messaged"
    return f"Messaged fewer than {rule['times']} times in the last {rule['days']} days"
