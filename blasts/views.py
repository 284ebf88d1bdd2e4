"""The marketers' pages: generic views over selectors, reusing the API's FilterSets."""

import csv
import io
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin, UserPassesTestMixin
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.generic import DetailView, FormView, TemplateView, View
from django_filters.views import FilterView

from .access import allowed, may, require
from .audit import Actor, Via
from .filters import BlastFilter, RecipientFilter
from .follow_ups import blast_create_follow_up
from .forms import BlastCreateForm, CompareForm, FollowUpForm
from .gateway.client import MESSAGE_ID_MAX_LENGTH
from .lifecycle import (
    BLAST_ACTIONS,
    blast_cancel,
    blast_pause,
    blast_queue,
    blast_resend_unknown,
    blast_resume,
)
from .models import Alert, Blast, BlastRecipient, Heartbeat
from .recipients import messages_preview
from .reporting.compare import blast_sequence, comparable_choices, comparable_funnel, funnels_compare
from .reporting.exports import csv_safe, recipients_csv_response
from .reporting.funnels import (
    blast_funnel,
    blast_funnels,
    blasts_daily,
    blasts_funnel_breakdown,
    blasts_funnel_total,
)
from .reporting.timing import blast_read_split, blast_reply_curve, blast_timings, blasts_timings_by_stage
from .selectors import blast_canaries, blast_progress, blast_stuck, workers_status
from .sending.pacing import device_finish_time
from .services import blast_create, recipients_exported
from .statuses import ACTIVE
from .tracking.events import recipient_match_message_id
from .tracking.polling import CHECK_QUIET_AFTER, blast_check_statuses, status_check_words
from .tracking.unmatched import blast_unmatched, recipient_match_choices


@require_GET
def healthz(request):
    """For load balancers and uptime checks: 200 when the database answers, 503 when it does not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"status": "unavailable", "database": "down"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


class StaffOnly(LoginRequiredMixin, UserPassesTestMixin):
    """Looking is for every staff login; `action`, when set, is what else the page needs (access.NEEDS)."""

    action = ""

    def test_func(self):
        return self.request.user.is_staff

    def dispatch(self, request, *args, **kwargs):
        if self.action and request.user.is_authenticated and request.user.is_staff:
            require(request.user, self.action)  # 403 naming the missing permission
        return super().dispatch(request, *args, **kwargs)


def _by(request) -> Actor:
    return Actor(request.user, Via.PAGE)


class StatusView(StaffOnly, TemplateView):
    """For operators: the database, each worker's last heartbeat, and the last status poll."""

    template_name = "blasts/status.html"

    def get_context_data(self, **kwargs):
        workers = workers_status()
        return {
            **super().get_context_data(**kwargs),
            "workers": workers,
            "senders": [w for w in workers if w["heartbeat"].role == Heartbeat.Role.SENDER],
            "pollers": [w for w in workers if w["heartbeat"].role == Heartbeat.Role.POLLER],
            "waiting": Blast.objects.filter(state__in=ACTIVE).count(),
            "alerts": Alert.objects.select_related("blast")[:20],
            "alert_emails": settings.ALERT_EMAILS,
            "alert_webhook": bool(settings.ALERT_WEBHOOK_URL),
        }


class BlastListView(StaffOnly, FilterView):
    """Blasts with a mini funnel each, filtered like the API, with totals for the filtered set."""

    filterset_class = BlastFilter
    queryset = Blast.objects.all()
    paginate_by = 25
    template_name = "blasts/blast_list.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        page = list(context["object_list"])
        funnels = blast_funnels(blast.pk for blast in page)
        context["rows"] = [(blast, funnels[blast.pk]) for blast in page]
        context["total"] = blasts_funnel_total(self.object_list)
        return context


class OverviewView(StaffOnly, FilterView):
    """The aggregate funnel over the filtered blasts, compared by tag and by follow-up stage, per day."""

    filterset_class = BlastFilter
    queryset = Blast.objects.all()
    template_name = "blasts/overview.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        blasts = self.object_list
        daily = blasts_daily(blasts)
        funnels = blasts_funnel_breakdown(blasts)
        context.update(
            total=funnels.total,
            stage_timings=blasts_timings_by_stage(blasts),
            comparisons=[("tag", funnels.by("tag")), ("follow-up stage", funnels.by("follow_up_stage"))],
            daily=daily,
            trend_max=max((day["sent"] for day in daily), default=1),
            trend_width=max(len(daily), 14) * 40,  # a few days do not make giant bars
        )
        return context


def _refresh_seconds(blast: Blast, checking: bool) -> int | None:
    """How often the live section reloads itself: often while sending or checking statuses, now and then
    while replies may come."""
    if blast.state in ACTIVE or checking:
        return 3
    recent = timezone.now() - timedelta(hours=settings.REPLY_ATTRIBUTION_HOURS)
    if blast.state == Blast.State.COMPLETED and blast.finished_at and blast.finished_at > recent:
        return 15
    return None


def _people(count: int) -> str:
    return f"{count} {'person' if count == 1 else 'people'}"


def _buttons(blast: Blast, funnel, user) -> list[tuple[str, str, str]]:
    """The actions this user may take on the blast now: (name, label, the question asked first)."""
    questions = {
        "send": f"Send this blast to {_people(funnel.not_sent)} now? Messages cannot be taken back.",
        "cancel": f"Cancel this blast? {_people(funnel.not_sent)} not sent yet will never get it.",
        "resend_unknown": f"Send again to the {_people(funnel.unknown)} whose send is unknown? "
        "Some of them may get it twice.",
    }
    actions = [*BLAST_ACTIONS.get(blast.state, []), ("check_status", "Check statuses now")]
    actions = [(name, label) for name, label in actions if name != "resend_unknown" or funnel.unknown]
    return [(name, label, questions.get(name, "")) for name, label in allowed(user, actions)]


def _live_context(blast: Blast, user) -> dict:
    check = blast.status_checks.first()  # the latest
    running = check is not None and check.finished_at is None
    quiet = timezone.now() - (check.last_checked_at or check.requested_at) if running else None
    funnel = blast_funnel(blast.pk)
    return {
        "blast": blast,
        "funnel": funnel,
        "stuck": blast_stuck(blast.pk, cancelled=blast.state == Blast.State.CANCELLED),
        "progress": blast_progress(blast),
        "check": check,
        "check_quiet": quiet if quiet and quiet > CHECK_QUIET_AFTER else None,
        "unmatched": blast_unmatched(blast),
        "refresh": _refresh_seconds(blast, checking=running),
        "actions": _buttons(blast, funnel, user),
    }


class BlastDetailView(StaffOnly, DetailView):
    """One blast: the funnel, where recipients are stuck, sending progress, actions and recipients."""

    model = Blast

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        recipients = RecipientFilter(self.request.GET, queryset=self.object.recipients.order_by("id"))
        page = Paginator(recipients.qs if recipients.is_valid() else BlastRecipient.objects.none(), 50)
        context.update(
            _live_context(self.object, self.request.user),
            recipients=recipients,
            page=page.get_page(self.request.GET.get("page")),
            follow_up_form=FollowUpForm(initial={"status": self.request.GET.get("follow_up", "READ_ACK")}),
            timings=blast_timings([self.object.pk]),
            reply_curve=blast_reply_curve([self.object.pk]),
            read_split=blast_read_split(self.object.pk),
            canaries=blast_canaries(self.object.pk),
            in_sequence=self.object.parent_id is not None or self.object.follow_ups.exists(),
            audit=self.object.audit.all()[:50],
            blast_str=str(self.object),
        )
        return context


class BlastSequenceView(StaffOnly, DetailView):
    """A blast's family: Initial → Follow-up 1 → Follow-up 2 … with cumulative reply and close rates."""

    model = Blast
    template_name = "blasts/blast_sequence.html"

    def get_context_data(self, **kwargs):
        root, base, steps = blast_sequence(self.object)
        return {**super().get_context_data(**kwargs), "root": root, "base": base, "steps": steps}


class CompareView(StaffOnly, TemplateView):
    """Two blasts, tags or follow-up stages side by side: rates with 95% intervals, and whether they differ."""

    template_name = "blasts/compare.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        form = CompareForm(self.request.GET or None, choices=comparable_choices())
        context["form"] = form
        if form.is_valid():
            (a_label, a), (b_label, b) = (comparable_funnel(form.cleaned_data[side]) for side in ("a", "b"))
            context.update(a_label=a_label, b_label=b_label, a=a, b=b, rows=funnels_compare(a, b))
        return context


class BlastLiveView(StaffOnly, DetailView):
    """The parts of a blast's page that change while it is in flight (htmx swaps them every few seconds)."""

    model = Blast
    template_name = "blasts/_blast_live.html"

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), **_live_context(self.object, self.request.user)}


class RecipientDetailView(StaffOnly, DetailView):
    """A recipient's timeline: every status change with its source."""

    model = BlastRecipient
    template_name = "blasts/recipient_detail.html"

    def get_queryset(self):
        return BlastRecipient.objects.filter(blast_id=self.kwargs["blast_pk"]).select_related("blast")

    def get_context_data(self, **kwargs):
        return {
            **super().get_context_data(**kwargs),
            "match_choices": recipient_match_choices(self.object) if may(self.request.user, "match") else [],
        }


class RecipientMatchView(StaffOnly, View):
    """An operator matches a send whose message id we never learnt to acks waiting under one id."""

    action = "match"

    def post(self, request, blast_pk, pk):
        recipient = get_object_or_404(BlastRecipient, blast_id=blast_pk, pk=pk)
        message_id = request.POST.get("message_id", "")[:MESSAGE_ID_MAX_LENGTH]
        try:
            applied = recipient_match_message_id(recipient=recipient, message_id=message_id, by=_by(request))
        except ValidationError as exc:
            messages.error(request, exc.messages[0])
        else:
            messages.success(request, f"Matched to message {message_id}: {applied} waiting acks applied.")
        return redirect("recipient-detail", blast_pk, pk)


def _rejected_csv(rejected: list) -> str:
    """The lines left out, as CSV text (line, phone, name, why), for the preview's download link."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["line", "phone", "name", "why"])
    writer.writerows([csv_safe(cell) for cell in row] for row in rejected)
    return out.getvalue()


class BlastCreatePageView(StaffOnly, FormView):
    """A new blast for marketers who prefer it to the admin: paste or upload, preview, see the ETA."""

    form_class = BlastCreateForm
    template_name = "blasts/blast_form.html"
    action = "create"

    def form_valid(self, form):
        fields = {name: form.cleaned_data[name] for name in BlastCreateForm.Meta.fields}
        if "preview" in self.request.POST:
            eta = device_finish_time(
                fields["device"],
                start=fields["scheduled_at"] or timezone.now(),
                count=len(form.parsed.recipients),
            )
            return self.render_to_response(
                self.get_context_data(
                    form=form,
                    preview=messages_preview(fields["message"], form.parsed.recipients),
                    rejected_csv=_rejected_csv(form.parsed.rejected),
                    eta=eta,
                    parsed=form.parsed,
                )
            )
        created = blast_create(**fields, recipients=form.parsed, by=_by(self.request))
        messages.success(
            self.request,
            f"{created.created} recipients added, {created.duplicates} duplicates dropped, "
            f"{created.opted_out} opted out (skipped).",
        )
        return redirect("blast-detail", created.blast.pk)


ACTIONS = {
    "send": (lambda blast, by: blast_queue(blast=blast, by=by), "Queued: the sender sends it now."),
    "pause": (lambda blast, by: blast_pause(blast=blast, reason=f"Paused by {by}.", by=by), "Paused."),
    "resume": (lambda blast, by: blast_resume(blast=blast, by=by), "Resumed."),
    "cancel": (
        lambda blast, by: blast_cancel(blast=blast, reason=f"Cancelled by {by}.", by=by),
        "Cancelled.",
    ),
    "resend_unknown": (lambda blast, by: blast_resend_unknown(blast=blast, by=by), "Requeued."),
}


class BlastActionView(StaffOnly, View):
    """The buttons on a blast's page: one lifecycle service each."""

    def post(self, request, pk, name):
        blast = get_object_or_404(Blast, pk=pk)
        if name != "check_status" and name not in ACTIONS:
            messages.error(request, "That is not an action.")
            return redirect("blast-detail", blast.pk)
        require(request.user, name)
        if name == "check_status":  # the poller asks the gateway; this request only marks the messages
            check = blast_check_statuses(blast=blast, by=_by(request))
            (messages.success if check else messages.info)(request, status_check_words(check))
            return redirect("blast-detail", blast.pk)
        service, done = ACTIONS[name]
        try:
            service(blast, _by(request))
            messages.success(request, done)
        except ValidationError as exc:
            messages.error(request, exc.messages[0])
        return redirect("blast-detail", blast.pk)


class FollowUpCreateView(StaffOnly, View):
    """A follow-up blast for one funnel cell (a status, for at least an age), as a draft to review and send."""

    action = "follow_up"

    def post(self, request, pk):
        parent = get_object_or_404(Blast, pk=pk)
        form = FollowUpForm(request.POST)
        if not form.is_valid():
            for errors in form.errors.values():
                messages.error(request, errors[0])
            return redirect("blast-detail", parent.pk)
        try:
            follow_up = blast_create_follow_up(
                parent=parent,
                status=BlastRecipient.Status[form.cleaned_data["status"]],
                message=form.cleaned_data["message"],
                min_age=form.cleaned_data["min_age_hours"],
                by=_by(request),
            )
        except ValidationError as exc:
            messages.error(request, exc.messages[0])
            return redirect("blast-detail", parent.pk)
        messages.success(
            request,
            f"Follow-up created with {follow_up.recipients.count()} recipients: review it, then send.",
        )
        return redirect("blast-detail", follow_up.pk)


class BlastRecipientsCsvView(StaffOnly, View):
    """The blast's recipients as a CSV file, with the page's recipient filters."""

    action = "export"

    def get(self, request, pk):
        blast = get_object_or_404(Blast, pk=pk)
        recipients = RecipientFilter(request.GET, queryset=blast.recipients.order_by("id"))
        rows = recipients.qs if recipients.is_valid() else blast.recipients.none()
        recipients_exported(blast=blast, filters=request.GET.dict(), rows=rows.count(), by=_by(request))
        return recipients_csv_response(rows, f"blast-{blast.pk}-recipients.csv")
