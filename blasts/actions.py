"""The pages' actions: each POST (a form or a button) calls one service and says what happened; and the
recipients CSV, an export the audit trail records."""

import csv
import io

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.generic import FormView, View

from .access import require
from .filters import RecipientFilter
from .follow_ups import blast_create_follow_up
from .forms import BlastCreateForm, FollowUpForm, MarkForm
from .gateway.client import MESSAGE_ID_MAX_LENGTH
from .lifecycle import (
    blast_cancel,
    blast_pause,
    blast_queue,
    blast_resend_unknown,
    blast_resume,
)
from .models import Blast, BlastRecipient
from .reporting.exports import csv_safe, recipients_csv_response
from .sending.pacing import device_finish_time
from .services import blast_create, recipient_mark, recipients_exported
from .tracking.events import recipient_match_message_id
from .tracking.polling import blast_check_statuses, status_check_words
from .views import StaffOnly, by_page


class RecipientMatchView(StaffOnly, View):
    """An operator matches a send whose message id we never learnt to acks waiting under one id."""

    action = "match"

    def post(self, request, blast_pk, pk):
        recipient = get_object_or_404(BlastRecipient, blast_id=blast_pk, pk=pk)
        message_id = request.POST.get("message_id", "")[:MESSAGE_ID_MAX_LENGTH]
        try:
            applied = recipient_match_message_id(
                recipient=recipient, message_id=message_id, by=by_page(request)
            )
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


class RecipientMarkView(StaffOnly, View):
    """Mark a recipient replied or closed (a sale, with a note and its value) from its page or the
    blast's recipients table; back where the click came from."""

    action = "mark"

    def post(self, request, blast_pk, pk):
        recipient = get_object_or_404(BlastRecipient, blast_id=blast_pk, pk=pk)
        form = MarkForm(request.POST)
        if not form.is_valid():
            for name, errors in form.errors.items():
                messages.error(request, f"{form.fields[name].label}: {errors[0]}")
        else:
            status = BlastRecipient.Status[form.cleaned_data["status"]]
            fields = {"note": form.cleaned_data["note"], "deal_value": form.cleaned_data["deal_value"]}
            if recipient_mark(recipient=recipient, status=status, by=by_page(request), **fields):
                messages.success(request, f"{recipient.phone} marked {status.label.lower()}.")
            else:
                messages.info(
                    request,
                    f"{recipient.phone} is {recipient.get_status_display().lower()}: nothing changed.",
                )
        back = request.POST.get("next", "")
        if url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return redirect(back)
        return redirect("recipient-detail", blast_pk, pk)


class BlastCreatePageView(StaffOnly, FormView):
    """A new blast for marketers who prefer it to the admin: paste or upload, preview, see the ETA."""

    form_class = BlastCreateForm
    template_name = "blasts/blast_form.html"
    action = "create"

    def form_valid(self, form):
        fields = form.blast_fields()
        if "preview" in self.request.POST:
            eta = device_finish_time(
                fields["device"],
                start=fields["scheduled_at"] or timezone.now(),
                count=len(form.parsed.recipients),
            )
            return self.render_to_response(
                self.get_context_data(
                    form=form,
                    previews=(previews := form.previews())[0],
                    held=previews[1],
                    tested=len(form.audience) - previews[1],
                    rejected_csv=_rejected_csv(form.parsed.rejected),
                    eta=eta,
                    parsed=form.parsed,
                )
            )
        created = blast_create(**fields, recipients=form.parsed, by=by_page(self.request))
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
            check = blast_check_statuses(blast=blast, by=by_page(request))
            (messages.success if check else messages.info)(request, status_check_words(check))
            return redirect("blast-detail", blast.pk)
        service, done = ACTIONS[name]
        try:
            service(blast, by_page(request))
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
                status=form.cleaned_data["status"],
                message=form.cleaned_data["message"],
                min_age=form.cleaned_data["min_age_hours"],
                by=by_page(request),
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
        recipients_exported(blast=blast, filters=request.GET.dict(), rows=rows.count(), by=by_page(request))
        return recipients_csv_response(rows, f"blast-{blast.pk}-recipients.csv")
