"""The contact list's filters, shared by the page and the API: each one a segment rule
(segments/rules.py), so the list and the segments choose contacts by one definition."""

import django_filters
from django import forms
from django.core.exceptions import ValidationError

from ..models import Contact
from ..segments.rules import MAX_DAYS, rules_clean
from ..statuses import STAGE_FLOOR
from .selectors import contacts_listed

ATTRIBUTE_OPS = [("equals", "equals"), ("contains", "contains"), ("is_empty", "has no value")]
HISTORY = [
    ("reached", "Reached a stage"),
    ("not_reached", "Never reached a stage"),
    ("never_messaged", "Never messaged"),
]
STAGES = [(stage, stage) for stage in STAGE_FLOOR]


class ContactFilterForm(forms.Form):
    """Checks the filters together and turns them into segment rules (`cleaned_data["rules"]`)."""

    def _rule(self, field: str, rule: dict) -> None:
        try:
            self.rules += rules_clean([rule])
        except ValidationError as exc:  # "Rule 1: value must be a text of at most 200 characters."
            self.add_error(field, exc.messages[0].removeprefix("Rule 1: ").capitalize())

    def clean(self):
        cleaned = super().clean()
        self.rules = []
        if tag := cleaned.get("tag"):
            self._rule("tag", {"kind": "tag", "op": "is", "value": tag})
        key, op, value = (cleaned.get(name) for name in ("attribute", "attribute_op", "attribute_value"))
        op = op or "equals"
        if key and op != "is_empty" and not value:
            self.add_error("attribute_value", "Give the value, or choose “has no value”.")
        elif value and not key:
            self.add_error("attribute", "Give the attribute the value is of, e.g. city.")
        elif key:
            self._rule("attribute", {"kind": "attribute", "op": op, "key": key, "value": value})
        self._history(cleaned.get("history"), cleaned.get("stage"), cleaned.get("days"))
        cleaned["rules"] = self.rules
        return cleaned

    def _history(self, history: str, stage: str, days: int | None) -> None:
        if not history:
            if stage or days:
                self.add_error("history", "Choose reached, never reached or never messaged.")
        elif history == "never_messaged":  # …in the last N days: fewer than one message in them
            rule = {"kind": "messaged_fewer", "times": 1, "days": days} if days else {"kind": history}
            self._rule("days", rule)
        elif not stage:
            self.add_error("stage", "Choose the stage: sent, received, read, replied or closed.")
        else:
            self._rule("history", {"kind": history, "stage": stage, "days": days})


class DaysFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


def _chosen_by_form(queryset, name, value):
    return queryset  # every filter is a rule the form made: filter_queryset applies them together


class ContactFilter(django_filters.FilterSet):
    """Contacts by search (name, or a number in any format), tag, attribute and funnel history;
    opted-out contacts included (the list marks them)."""

    q = django_filters.CharFilter(
        method=_chosen_by_form, label="Search", help_text="A name, or a phone number in any format."
    )
    tag = django_filters.CharFilter(
        method=_chosen_by_form, label="Tag", help_text="A tag the contact has, as written.",
        widget=forms.TextInput(attrs={"list": "contact-tag-choices"}),
    )  # fmt: skip
    attribute = django_filters.CharFilter(
        method=_chosen_by_form, label="Attribute", help_text="Its name, e.g. city."
    )
    attribute_op = django_filters.ChoiceFilter(
        method=_chosen_by_form, choices=ATTRIBUTE_OPS, label="Attribute is", empty_label=None,
        help_text="equals (the default) or contains ignore case.",
    )  # fmt: skip
    attribute_value = django_filters.CharFilter(
        method=_chosen_by_form, label="Value", help_text="The attribute's value (with attribute)."
    )
    history = django_filters.ChoiceFilter(
        method=_chosen_by_form, choices=HISTORY, label="History", help_text="Across every blast."
    )
    stage = django_filters.ChoiceFilter(
        method=_chosen_by_form, choices=STAGES, label="Stage", help_text="The funnel stage (with history)."
    )
    days = DaysFilter(
        method=_chosen_by_form, label="In the last (days)", min_value=1, max_value=MAX_DAYS,
        help_text="Only in the last so many days (empty: ever).",
    )  # fmt: skip

    class Meta:
        model = Contact
        fields = ["q", "tag", "attribute", "attribute_op", "attribute_value", "history", "stage", "days"]
        form = ContactFilterForm

    def filter_queryset(self, queryset):
        # The rules make their own query of every contact (segment_members): `queryset` is all of them.
        data = self.form.cleaned_data
        return contacts_listed(rules=data["rules"], q=data.get("q") or "")
