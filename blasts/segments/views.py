"""The segment pages: the list with live counts, the rule builder with its preview, a segment with a
sample of its members and "New blast from segment", and delete."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.views.generic import ListView, TemplateView, View

from ..access import require
from ..models import Segment
from ..views import StaffOnly, by_page
from .forms import BlastFromSegmentForm, SegmentForm, add_service_errors, rule_formset
from .rules import rule_words, segment_members
from .selectors import rule_choices, segment_count, segment_sample, segments_counts, segments_listed
from .services import blast_create_from_segment, segment_delete, segment_save

NEW_ROWS = 3  # blank rule rows on a new segment


def rules_in_words(segment: Segment) -> list[str]:
    return [rule_words(rule) for rule in segment.rules]


class SegmentListView(StaffOnly, ListView):
    """Every segment: its rules in words, how many contacts it has now, the blasts made from it."""

    template_name = "blasts/segment_list.html"
    paginate_by = 25

    def get_queryset(self):
        return segments_listed()

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        page = list(context["object_list"])
        counts = segments_counts(page)  # one query for the page
        context["rows"] = [(segment, rules_in_words(segment), counts.get(segment.pk, 0)) for segment in page]
        return context


def _error_summary(form, rules) -> list[tuple[str, str]]:
    """(the field's id, the message) for each error, for the summary at the top of the page."""
    found = [(f"id_{name}", f"{form.fields[name].label}: {message}") if name in form.fields
             else ("segment-form", message) for name, errors in form.errors.items() for message in errors]  # fmt: skip
    found += [("rules", message) for message in rules.non_form_errors()]
    for number, row in enumerate(rules.forms, start=1):
        for name, errors in row.errors.items():
            target = f"id_{row.prefix}-{name}" if name != "__all__" else f"rule-{number}"
            found += [(target, f"Rule {number}: {message}") for message in errors]
    return found


class SegmentFormView(StaffOnly, TemplateView):
    """A new segment, or one changed: rule rows (Add a rule adds one), Preview shows the live count and
    a sample before anything is saved; Save needs the segment_edit permission."""

    template_name = "blasts/segment_form.html"

    def get_segment(self) -> Segment:
        pk = self.kwargs.get("pk")
        return get_object_or_404(Segment, pk=pk) if pk else Segment()

    def get(self, request, *args, **kwargs):
        segment = self.get_segment()
        rows = NEW_ROWS if segment.pk is None else 1
        return self.render(
            segment, SegmentForm(instance=segment), rule_formset(rules=segment.rules, extra=rows)
        )

    def post(self, request, *args, **kwargs):
        segment = self.get_segment()
        form = SegmentForm(request.POST, instance=segment)
        if "add_rule" in request.POST:
            return self.render(segment, form, rule_formset(request.POST, extra=1), checked=False)
        rules = rule_formset(request.POST, extra=0)
        if "preview" in request.POST:
            if not rules.is_valid():
                return self.render(segment, form, rules, checked="rules")
            match = form["match"].value() if form["match"].value() in Segment.Match.values else "all"
            count = segment_members(match, rules.rules).count()
            preview = {"count": count, "sample": segment_sample(match, rules.rules, count)}
            return self.render(segment, form, rules, checked="rules", preview=preview)
        require(request.user, "segment_edit")
        if form.is_valid() and rules.is_valid():
            form.instance.rules = rules.rules
            try:
                segment = segment_save(segment=form.instance, by=by_page(request))
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, f"Segment “{segment}” saved.")
                return redirect("segment-detail", segment.pk)
        return self.render(segment, form, rules)

    def render(self, segment, form, rules, checked=True, preview=None):
        """`checked`: which errors to show (True: all; "rules": the rules'; False: none, as after Add a rule)."""
        errors = []
        if checked:
            errors = _error_summary(form if checked is True else SegmentForm(), rules)
        context = self.get_context_data(segment=segment, form=form, rules=rules, checked=checked,
                                        form_checked=checked is True, errors=errors, preview=preview,
                                        **rule_choices())  # fmt: skip
        return self.render_to_response(context)


def _detail_context(segment: Segment, blast_form: BlastFromSegmentForm) -> dict:
    count = segment_count(segment)
    return {
        "segment": segment,
        "words": rules_in_words(segment),
        "count": count,
        "sample": segment_sample(segment.match, segment.rules, count),
        "blasts": list(segment.blasts.order_by("-created_at", "-id")[:20]),
        "blast_form": blast_form,
        **rule_choices(),
    }


class SegmentDetailView(StaffOnly, TemplateView):
    """One segment: its rules in words, live count and sample, the blasts made from it, and a new blast."""

    template_name = "blasts/segment_detail.html"

    def get(self, request, pk):
        segment = get_object_or_404(Segment, pk=pk)
        return self.render_to_response(_detail_context(segment, BlastFromSegmentForm()))


class SegmentBlastView(StaffOnly, TemplateView):
    """New blast from segment: a draft to the members now (a snapshot), then its page to review and send."""

    template_name = "blasts/segment_detail.html"
    action = "create"

    def post(self, request, pk):
        segment = get_object_or_404(Segment, pk=pk)
        form = BlastFromSegmentForm(request.POST)
        if form.is_valid():
            try:
                created = blast_create_from_segment(segment=segment, **form.cleaned_data, by=by_page(request))
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(
                    request,
                    f"Draft made from “{segment}”: {created.created} recipients, {created.opted_out} opted out "
                    "(skipped). Review it, then send.",
                )
                return redirect("blast-detail", created.blast.pk)
        return self.render_to_response(_detail_context(segment, form))


class SegmentDeleteView(StaffOnly, View):
    """Delete a segment (the blasts made from it keep their recipients)."""

    action = "segment_delete"

    def post(self, request, pk):
        segment = get_object_or_404(Segment, pk=pk)
        segment_delete(segment=segment, by=by_page(request))
        messages.success(request, f"Segment “{segment}” deleted. Blasts made from it keep their recipients.")
        return redirect("segment-list")
