"""FilterSets shared by the REST API and the funnel pages."""

import django_filters
from django.db.models import Q

from .models import Blast, BlastRecipient

Status = BlastRecipient.Status

# A recipient's funnel stage (cumulative) or where it stands off the funnel.
STAGES: dict[str, Q] = {
    "sent": Q(status__gte=Status.PENDING),
    "received": Q(status__gte=Status.DELIVERY_ACK),
    "read": Q(status__gte=Status.READ_ACK),
    "replied": Q(status__gte=Status.REPLIED),
    "closed": Q(status=Status.CLOSED),
    "not_sent": Q(status__in=[Status.QUEUED, Status.SENDING]),
    "failed": Q(status=Status.FAILED),
    "unknown": Q(status=Status.UNKNOWN),
    "skipped": Q(status=Status.SKIPPED),
}


class BlastFilter(django_filters.FilterSet):
    date = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date", label="Created on", help_text="Created on this day."
    )
    date_from = django_filters.DateFilter(
        field_name="created_at",
        lookup_expr="date__gte",
        label="From",
        help_text="Created on or after this day.",
    )
    date_to = django_filters.DateFilter(
        field_name="created_at",
        lookup_expr="date__lte",
        label="To",
        help_text="Created on or before this day.",
    )
    tag = django_filters.CharFilter(field_name="tag", lookup_expr="iexact", label="Tag")
    stage = django_filters.CharFilter(
        field_name="follow_up_stage", lookup_expr="iexact", label="Follow-up stage"
    )
    state = django_filters.ChoiceFilter(choices=Blast.State.choices, label="State")

    class Meta:
        model = Blast
        fields = ["date", "date_from", "date_to", "tag", "stage", "state"]


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
    q = django_filters.CharFilter(
        method="filter_search", label="Search", help_text="Phone, name or message id."
    )

    class Meta:
        model = BlastRecipient
        fields = ["status", "stage", "q"]

    def filter_status(self, queryset, name, value):
        return queryset.filter(status=Status[value])

    def filter_stage(self, queryset, name, value):
        return queryset.filter(STAGES[value])

    def filter_search(self, queryset, name, value):
        value = value.strip()
        return queryset.filter(
            Q(phone__icontains=value) | Q(name__icontains=value) | Q(message_id__icontains=value)
        )
