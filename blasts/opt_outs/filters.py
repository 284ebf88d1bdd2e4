"""The opt-out list's search, the same on the page, in its CSV export and in the API."""

import django_filters
from django import forms

from ..models import OptOut
from .services import opt_outs_matching


class OptOutFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="search",
        label="Search",
        help_text="A number in any format (or part of one), or words of the reason or the reply.",
        widget=forms.TextInput(attrs={"type": "search"}),
    )
    source = django_filters.ChoiceFilter(
        choices=OptOut.Source.choices, label="Came from", help_text="reply, import or person."
    )

    class Meta:
        model = OptOut
        fields = ["q", "source"]

    def search(self, queryset, name, value):
        return opt_outs_matching(queryset, value)
