"""This capability's admin pages (imported by blasts/admin.py, where Django looks)."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from ..access import may
from ..audit import Actor, Via
from ..models import Segment
from .forms import SegmentAdminForm
from .rules import rule_words
from .services import segment_delete, segment_save


def _by(request) -> Actor:
    return Actor(request.user, Via.ADMIN)


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    """Segments: the rules edited as JSON (checked), shown in words; saves and deletes are audited."""

    form = SegmentAdminForm
    list_display = ["name", "match", "rules_in_words", "created_by", "updated_at"]
    list_filter = ["match", "created_at"]
    list_select_related = ["created_by"]
    search_fields = ["name"]
    fields = ["name", "match", "rules", "rules_in_words", "created_by", "created_at", "updated_at"]
    readonly_fields = ["rules_in_words", "created_by", "created_at", "updated_at"]

    @admin.display(description="rules in words")
    def rules_in_words(self, segment):
        if not segment.rules:
            return "Every contact (no rules)"
        joined = "all of" if segment.match == Segment.Match.ALL else "any of"
        items = format_html_join("", "<li>{}</li>", ((rule_words(rule),) for rule in segment.rules))
        return format_html("{}:<ul>{}</ul>", joined.capitalize(), items)

    def view_on_site(self, segment):
        return reverse("segment-detail", args=[segment.pk])

    def has_add_permission(self, request):
        return may(request.user, "segment_edit")

    def has_change_permission(self, request, obj=None):
        return may(request.user, "segment_edit")

    def has_delete_permission(self, request, obj=None):
        return may(request.user, "segment_delete")

    def save_model(self, request, obj, form, change):
        segment_save(segment=obj, by=_by(request))

    def delete_model(self, request, obj):
        segment_delete(segment=obj, by=_by(request))

    def delete_queryset(self, request, queryset):
        for segment in queryset:
            segment_delete(segment=segment, by=_by(request))
