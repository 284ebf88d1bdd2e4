"""The segment pages' forms: the segment, its rules as rows (a formset: works without JavaScript),
and a new blast from it."""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from ..models import Blast, Segment
from ..statuses import STAGE_FLOOR
from ..templatetags.blasts_extras import zone_name
from .rules import KINDS, MAX_DAYS, MAX_RULES, MAX_TIMES, VALUE_MAX, RuleError, rule_clean, rules_clean

OP_WORDS = {
    "is": "is",
    "is_not": "is not",
    "equals": "equals",
    "contains": "contains",
    "is_empty": "is empty",
}
BLANK = [("", "—")]


def _suggest(datalist: str, **attrs) -> forms.TextInput:
    return forms.TextInput(attrs={"list": datalist, "autocomplete": "off", **attrs})


class RuleForm(forms.Form):
    """One rule row. Each kind reads only its own fields (the hint says which); a blank row is no rule."""

    field_order = ["kind", "key", "op", "value"]  # "city" "equals" "Ipoh" reads as a sentence
    kind = forms.ChoiceField(label="Rule", choices=[("", "— no rule —"), *KINDS.items()], required=False)
    op = forms.ChoiceField(label="How", choices=[*BLANK, *OP_WORDS.items()], required=False)
    key = forms.CharField(label="Attribute", max_length=50, required=False, widget=_suggest("attribute-keys"))
    value = forms.CharField(
        label="Value", max_length=VALUE_MAX, required=False, widget=_suggest("contact-tags")
    )
    stage = forms.ChoiceField(
        label="Stage", choices=[*BLANK, *((stage, stage) for stage in STAGE_FLOOR)], required=False
    )
    tag = forms.CharField(
        label="In blasts tagged", max_length=VALUE_MAX, required=False, widget=_suggest("blast-tags")
    )
    follow_up_stage = forms.CharField(
        label="On the follow-up stage", max_length=VALUE_MAX, required=False, widget=_suggest("blast-stages")
    )
    days = forms.IntegerField(label="In the last … days", min_value=1, max_value=MAX_DAYS, required=False)
    times = forms.IntegerField(label="Fewer than … times", min_value=1, max_value=MAX_TIMES, required=False)

    def clean(self):
        cleaned = super().clean()
        self.rule = None
        given = {name: value for name, value in cleaned.items() if value not in (None, "")}
        if not given.get("kind"):
            if given:  # something typed, but no kind: say so rather than drop what was typed
                self.add_error("kind", "Choose what this rule looks at, or clear the row to remove it.")
            return cleaned
        if self.errors:  # a field's own error (days not a number) says it better than the rule would
            return cleaned
        try:
            self.rule = rule_clean(given)
        except RuleError as exc:
            field = exc.field if exc.field in self.fields else "kind"
            if field in ("op", "stage", "kind"):
                choices = [label for value, label in self.fields[field].choices if value]
                message = f"Choose one of: {', '.join(choices)}."
            else:
                message = f"{str(exc)[:1].upper()}{str(exc)[1:]}."
            self.add_error(field, message)
        return cleaned


class BaseRuleFormSet(forms.BaseFormSet):
    @property
    def rules(self) -> list[dict]:
        """The rules of the rows that have one, in order (after is_valid())."""
        return [form.rule for form in self.forms if getattr(form, "rule", None)]


RuleFormSet = forms.formset_factory(
    RuleForm, formset=BaseRuleFormSet, extra=0, max_num=MAX_RULES, absolute_max=MAX_RULES, validate_max=True
)
RULES_PREFIX = "rules"


def rule_formset(data=None, rules: list[dict] = (), extra: int = 1) -> BaseRuleFormSet:
    """The rule rows: a segment's rules (for a GET) or what was posted, with `extra` blank rows."""
    if data is not None:
        if extra:  # "Add a rule": one row more than was posted, up to the most there may be
            data = data.copy()
            total = f"{RULES_PREFIX}-TOTAL_FORMS"
            data[total] = str(min(_number(data.get(total)) + extra, MAX_RULES))
        return RuleFormSet(data, prefix=RULES_PREFIX)
    formset = forms.formset_factory(
        RuleForm, formset=BaseRuleFormSet, extra=extra, max_num=MAX_RULES, absolute_max=MAX_RULES
    )
    return formset(initial=[dict(rule) for rule in rules], prefix=RULES_PREFIX)


def _number(text) -> int:
    return int(text) if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 4 else 0


class SegmentForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = ["name", "match"]
        widgets = {"match": forms.RadioSelect}
        labels = {"match": "A contact is a member when it meets"}


class BlastFromSegmentForm(forms.ModelForm):
    """A new draft blast to the segment's members as they are now."""

    class Meta:
        model = Blast
        fields = ["tag", "follow_up_stage", "message", "device", "scheduled_at"]
        widgets = {
            "tag": _suggest("blast-tags"),
            "follow_up_stage": _suggest("blast-stages"),
            "message": forms.Textarea(attrs={"rows": 4}),
            "scheduled_at": forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["device"].initial = settings.WSAPME_DEVICE
        self.fields[
            "scheduled_at"
        ].help_text = f"Send no earlier than this, in {zone_name()} time ({settings.TIME_ZONE}). Empty: as soon as it is sent."


def add_service_errors(form: forms.BaseForm, exc: ValidationError) -> None:
    """A service's refusal beside the field it is about (the rest above the form)."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


class SegmentAdminForm(forms.ModelForm):
    """The admin's form: the rules edited as JSON, checked by rules_clean (an error names the rule)."""

    class Meta:
        model = Segment
        fields = ["name", "match", "rules"]
        help_texts = {
            "rules": 'A JSON list, e.g. [{"kind": "tag", "op": "is", "value": "VIP"}, {"kind": "reached", '
            '"stage": "read", "tag": "Raya", "days": 30}]. The rule shapes: blasts/segments/rules.py.'
        }

    def clean_rules(self):
        try:
            return rules_clean(self.cleaned_data["rules"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from None
