"""FilterSets shared by the REST API and the funnel pages."""

import django_filters
from django import forms
from django.db.models import Q

from .models import Blast, BlastRecipient
from .statuses import STAGE_FLOOR

Status = BlastRecipient.Status

# A recipient's funnel stage (cumulative) or where it stands off the funnel.
STAGES: dict[str, Q] = {
    **{stage: Q(status__gte=floor) for stage, floor in STAGE_FLOOR.items()},
    "not_sent": Q(status__in=[Status.QUEUED, Status.SENDING]),
    "failed": Q(status=Status.FAILED),
    "unknown": Q(status=Status.UNKNOWN),
    "skipped": Q(status=Status.SKIPPED),
}


class BlastFilterForm(forms.Form):
    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", f"To ({end:%d %b %Y}) is before From ({start:%d %b %Y}): swap them.")
        return cleaned


DATE = forms.DateInput(attrs={"type": "date"})  # a date picker: nothing to misread


class BlastFilter(django_filters.FilterSet):
    """Blasts by day created, tag and follow-up stage (any case; the pages offer the ones there are) and state."""

    date = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date", label="Created on", help_text="Created on this day.",
        widget=DATE,
    )  # fmt: skip
    date_from = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__gte", label="From", help_text="Created on or after this day.",
        widget=DATE,
    )  # fmt: skip
    date_to = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__lte", label="To", help_text="Created on or before this day.",
        widget=DATE,
    )  # fmt: skip
    tag = django_filters.CharFilter(
        field_name="tag",
        lookup_expr="iexact",
        label="Tag",
        widget=forms.TextInput(attrs={"list": "tag-choices"}),
    )
    stage = django_filters.CharFilter(
        field_name="follow_up_stage", lookup_expr="iexact", label="Follow-up stage",
        widget=forms.TextInput(attrs={"list": "stage-choices"}),
    )  # fmt: skip
    state = django_filters.ChoiceFilter(choices=Blast.State.choices, label="State")

    class Meta:
        model = Blast
        fields = ["date", "date_from", "date_to", "tag", "stage", "state"]
        form = BlastFilterForm


class RecipientFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        choices=[(s.name, s.label) for s in Status],
        method="filter_status",
        label="Status now",
        help_text="Current status, e.g. READ_ACK.",
    )
    stage = django_filters.ChoiceFilter(
        choices=[(name, name.replace("_", " ")) for name in STAGES],
        method="filter_stage",
        label="Reached stage",
        help_text="Reached this funnel stage (or failed, unknown, skipped, not sent).",
    )
    clicked = django_filters.BooleanFilter(
        method="filter_clicked",
        label="Clicked a link",
        help_text="true: clicked a tracked link (link previews are no clicks); false: not.",
        widget=forms.Select(choices=[("", "Any"), ("true", "Clicked"), ("false", "Not clicked")]),
    )
    q = django_filters.CharFilter(
        method="filter_search", label="Search", help_text="Phone, name or message id."
    )

    class Meta:
        model = BlastRecipient
        fields = ["status", "stage", "clicked", "q"]

    def filter_status(self, queryset, name, value):
        return queryset.filter(status=Status[value])

    def filter_stage(self, queryset, name, value):
        return queryset.filter(STAGES[value])

    def filter_clicked(self, queryset, name, value):
        return queryset.filter(clicked_at__isnull=not value)

    def filter_search(self, queryset, name, value):
        value = value.strip()
        return queryset.filter(
            Q(phone__icontains=value) | Q(name__icontains=value) | Q(message_id__icontains=value)
        )
