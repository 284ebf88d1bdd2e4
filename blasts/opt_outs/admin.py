"""This capability's admin pages (imported by blasts/admin.py, where Django looks).

The opt-out list is read-only here but for its actions: add a number (through opt_out_add) and
"Remove from the opt-out list", which asks a reason first. No entry is edited or plainly deleted."""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from ..access import may
from ..admin import PhoneSearch, _by
from ..models import OptOut
from .forms import OptOutForm, OptOutRemoveForm
from .services import opt_out_add, opt_out_remove

DETAIL = ["phone", "source", "reason", "reply_text", "blast", "added_by", "created_at"]


@admin.register(OptOut)
class OptOutAdmin(PhoneSearch, admin.ModelAdmin):
    form = OptOutForm
    list_display = ["phone", "source", "reason", "blast", "added_by", "created_at"]
    list_filter = ["source", "created_at"]
    list_select_related = ["blast", "added_by"]
    search_fields = ["phone", "reason", "reply_text"]
    date_hierarchy = "created_at"
    actions = ["remove"]

    def get_fields(self, request, obj=None):
        return ["phone", "reason"] if obj is None else DETAIL

    def has_add_permission(self, request):
        return may(request.user, "opt_out")

    def has_change_permission(self, request, obj=None):
        return False  # a number is added or removed, with its reason; an entry is never edited

    def has_delete_permission(self, request, obj=None):
        return False  # removing asks a reason, for the audit trail: the "remove" action

    def has_opt_out_permission(self, request):
        return may(request.user, "opt_out")

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        obj.pk = opt_out_add(phone=data["phone"], reason=data["reason"], by=_by(request)).pk

    @admin.action(description="Remove from the opt-out list", permissions=["opt_out"])
    def remove(self, request, queryset):
        """Asks the reason on a page of its own, then removes each selected number (one audit row each)."""
        form = OptOutRemoveForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            by, reason = _by(request), form.cleaned_data["reason"]
            removed = sum(opt_out_remove(opt_out=opt_out, by=by, reason=reason) for opt_out in queryset)
            self.message_user(
                request,
                f"Removed {removed} number(s) from the opt-out list: blasts may message them again.",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Remove from the opt-out list",
            "opts": self.model._meta,
            "opt_outs": queryset,
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "blasts/opt_out_admin_remove.html", context)
