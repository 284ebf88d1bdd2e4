"""The opt-out list's pages: search and add by hand, remove with a reason, import and export CSV."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.utils.functional import cached_property
from django.views.generic import FormView, View
from django_filters.views import FilterView

from ..access import require
from ..models import OptOut
from ..views import StaffOnly, by_page
from .filters import OptOutFilter
from .forms import OptOutForm, OptOutImportForm, OptOutRemoveForm
from .services import (
    opt_out_add,
    opt_out_remove,
    opt_outs_csv_response,
    opt_outs_exported,
    opt_outs_import,
    opt_outs_listed,
)


class OptOutListView(StaffOnly, FilterView):
    """Every number that must not be messaged, where it came from, searchable; and a form to add one."""

    filterset_class = OptOutFilter
    paginate_by = 50
    template_name = "blasts/opt_out_list.html"
    form = None  # the add form as posted, when it has errors

    def get_queryset(self):
        return opt_outs_listed(OptOut.objects.all())

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "form": self.form or OptOutForm()}

    def post(self, request, *args, **kwargs):
        require(request.user, "opt_out")
        self.form = OptOutForm(request.POST)
        if not self.form.is_valid():
            return self.get(request, *args, **kwargs)
        data = self.form.cleaned_data
        opt_out = opt_out_add(phone=data["phone"], reason=data["reason"], by=by_page(request))
        messages.success(request, f"{opt_out.phone} is on the opt-out list: no blast will message it.")
        return redirect("opt-out-list")


class OptOutRemoveView(StaffOnly, FormView):
    """Take one number off the list, saying why (the audit trail keeps it)."""

    action = "opt_out"
    form_class = OptOutRemoveForm
    template_name = "blasts/opt_out_remove.html"

    @cached_property
    def opt_out(self):  # looked up after the sign-in and permission checks
        return get_object_or_404(opt_outs_listed(OptOut.objects.all()), pk=self.kwargs["pk"])

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "opt_out": self.opt_out}

    def form_valid(self, form):
        if opt_out_remove(opt_out=self.opt_out, by=by_page(self.request), reason=form.cleaned_data["reason"]):
            messages.success(self.request, f"{self.opt_out.phone} is off the opt-out list: blasts may message it again.")  # fmt: skip
        else:
            messages.info(self.request, f"{self.opt_out.phone} was off the list already.")
        return redirect("opt-out-list")


class OptOutImportView(StaffOnly, FormView):
    """A file of numbers put on the list at once; the page then says what became of each line."""

    action = "opt_out"
    form_class = OptOutImportForm
    template_name = "blasts/opt_out_import.html"

    def form_valid(self, form):
        imported = opt_outs_import(
            rows=form.rows, reason=form.cleaned_data["reason"], by=by_page(self.request)
        )
        context = self.get_context_data(
            form=self.form_class(), imported=imported, file_name=form.kept_name, file_note=form.file_note
        )
        return self.render_to_response(context)


class OptOutExportView(StaffOnly, View):
    """The list (as searched on the page) as a CSV file; the audit trail records the download."""

    action = "opt_out_export"

    def get(self, request):
        found = OptOutFilter(request.GET, queryset=OptOut.objects.all())
        rows = found.qs if found.is_valid() else OptOut.objects.none()
        opt_outs_exported(filters=request.GET.dict(), rows=rows.count(), by=by_page(request))
        return opt_outs_csv_response(rows)
