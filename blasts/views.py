"""The marketers' pages: generic views over selectors, reusing the API's FilterSets."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.mixins import LoginRequiredMixin, UserPassesTestMixin
from django.core.paginator import Paginator
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.generic import DetailView, TemplateView
from django_filters.views import FilterView

from .access import allowed, may, require
from .audit import Actor, Via
from .filters import BlastFilter, RecipientFilter
from .forms import CompareForm, FollowUpForm
from .lifecycle import (
    BLAST_ACTIONS,
)
from .models import Alert, Blast, BlastRecipient, Heartbeat
from .reporting.clicks import blast_clicks, blast_tracks_links
from .reporting.compare import blast_sequence, comparable_choices, comparable_funnel, funnels_compare
from .reporting.funnels import (
    blast_funnel,
    blast_funnels,
    blasts_funnel_total,
)
from .reporting.rollups import blasts_overview
from .reporting.timing import blast_read_split, blast_reply_curve, blast_timings
from .reporting.variants import blast_variant_test, blast_variants
from .selectors import (
    BACKLOG_ALERT_AFTER,
    blast_canaries,
    blast_filter_choices,
    blast_progress,
    blast_stuck,
    health_report,
    tags_like,
    webhook_backlog,
    workers_status,
)
from .statuses import ACTIVE
from .tracking.polling import CHECK_QUIET_AFTER
from .tracking.unmatched import blast_unmatched, recipient_match_choices
from .variants import recipient_message


@require_GET
def healthz(request):
    """For load balancers and uptime checks: 200 when the database answers, 503 when it does not.

    `?deep=1`, for an uptime check rather than a load balancer, also reports the workers' heartbeats
    and the webhook backlog, and is 503 when webhook events have waited too long to be applied.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        if request.GET.get("deep") not in (None, "", "0"):
            report = health_report()
            return JsonResponse({**report, "database": "ok"}, status=503 if report["status"] != "ok" else 200)
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


def by_page(request) -> Actor:
    return Actor(request.user, Via.PAGE)


class StatusView(StaffOnly, TemplateView):
    """For operators: the database, each worker's last heartbeat, the last status poll, and the webhook
    events waiting for the applier."""

    template_name = "blasts/status.html"

    def get_context_data(self, **kwargs):
        workers = workers_status()
        return {
            **super().get_context_data(**kwargs),
            "workers": workers,
            "senders": [w for w in workers if w["heartbeat"].role == Heartbeat.Role.SENDER],
            "pollers": [w for w in workers if w["heartbeat"].role == Heartbeat.Role.POLLER],
            "appliers": [w for w in workers if w["heartbeat"].role == Heartbeat.Role.APPLIER],
            "backlog": webhook_backlog(),
            "backlog_alert_after": BACKLOG_ALERT_AFTER,
            "waiting": Blast.objects.filter(state__in=ACTIVE).count(),
            "alerts": Alert.objects.select_related("blast")[:20],
            "alert_emails": settings.ALERT_EMAILS,
            "alert_webhook": bool(settings.ALERT_WEBHOOK_URL),
        }


class BlastFilterPage(StaffOnly, FilterView):
    """A page of blasts filtered like the API; the filters offer the tags and stages there are."""

    filterset_class = BlastFilter
    queryset = Blast.objects.all()

    def get_context_data(self, **kwargs):
        context = {**super().get_context_data(**kwargs), **blast_filter_choices()}
        form = context["filter"].form
        tag = form.cleaned_data.get("tag") if form.is_valid() else ""
        if tag and not self.object_list.exists():
            context["similar_tags"] = [like for like in tags_like(tag) if like.lower() != tag.lower()]
        return context


class BlastListView(BlastFilterPage):
    """Blasts with a mini funnel each, filtered like the API, with totals for the filtered set."""

    paginate_by = 25
    template_name = "blasts/blast_list.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        page = list(context["object_list"])
        funnels = blast_funnels(blast.pk for blast in page)
        context["rows"] = [(blast, funnels[blast.pk]) for blast in page]
        context["total"] = blasts_funnel_total(self.object_list)
        return context


class OverviewView(BlastFilterPage):
    """The aggregate funnel over the filtered blasts, compared by tag and by follow-up stage, per day."""

    template_name = "blasts/overview.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        overview = blasts_overview(self.object_list)  # from the rollups that still hold, the rest live
        daily, funnels = overview.daily, overview.breakdown
        context.update(
            total=funnels.total,
            stage_timings=overview.stage_timings,
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


def _live_context(blast: Blast, user, params) -> dict:
    """Everything on a blast's page that changes while it is in flight: the live view sends it all
    every few seconds (the recipients as filtered and paged by `params`)."""
    check = blast.status_checks.first()  # the latest
    running = check is not None and check.finished_at is None
    quiet = timezone.now() - (check.last_checked_at or check.requested_at) if running else None
    funnel = blast_funnel(blast.pk)
    recipients = RecipientFilter(params, queryset=blast.recipients.order_by("id"))
    return {
        "blast": blast,
        "funnel": funnel,
        "clicks": blast_clicks(blast.pk) if blast_tracks_links(blast) else None,
        "variants": blast_variants(blast),
        "variant_test": blast_variant_test(blast),
        "stuck": blast_stuck(blast.pk, cancelled=blast.state == Blast.State.CANCELLED),
        "progress": blast_progress(blast),
        "check": check,
        "check_quiet": quiet if quiet and quiet > CHECK_QUIET_AFTER else None,
        "unmatched": blast_unmatched(blast),
        "refresh": _refresh_seconds(blast, checking=running),
        "actions": _buttons(blast, funnel, user),
        "recipients": recipients,
        "page": Paginator(
            recipients.qs if recipients.is_valid() else BlastRecipient.objects.none(), 50
        ).get_page(params.get("page")),
        "timings": blast_timings([blast.pk]),
        "reply_curve": blast_reply_curve([blast.pk]),
        "read_split": blast_read_split(blast.pk),
        "canaries": blast_canaries(blast.pk),
        "audit": blast.audit.all()[:50],
        "blast_str": str(blast),
        "mark_choices": [("REPLIED", "Replied"), ("CLOSED", "Closed")],
        "page_url": f"{reverse('blast-detail', args=[blast.pk])}?{params.urlencode()}",
    }


class BlastDetailView(StaffOnly, DetailView):
    """One blast: the funnel, where recipients are stuck, sending progress, actions and recipients."""

    model = Blast

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(
            _live_context(self.object, self.request.user, self.request.GET),
            follow_up_form=FollowUpForm(initial={"status": self.request.GET.get("follow_up", "READ_ACK")}),
            in_sequence=self.object.parent_id is not None or self.object.follow_ups.exists(),
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
        live = _live_context(self.object, self.request.user, self.request.GET)
        return {**super().get_context_data(**kwargs), **live, "oob": True}


class RecipientDetailView(StaffOnly, DetailView):
    """A recipient's timeline: every status change with its source."""

    model = BlastRecipient
    template_name = "blasts/recipient_detail.html"

    def get_queryset(self):
        return BlastRecipient.objects.filter(blast_id=self.kwargs["blast_pk"]).select_related(
            "blast", "contact"
        )

    def get_context_data(self, **kwargs):
        return {
            **super().get_context_data(**kwargs),
            "text": recipient_message(self.object),
            "match_choices": recipient_match_choices(self.object) if may(self.request.user, "match") else [],
        }
