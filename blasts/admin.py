from contextlib import suppress

from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme

from .access import allowed, may
from .audit import Actor, Via
from .forms import BlastCreateForm, BlastEditForm
from .lifecycle import (
    BLAST_ACTIONS,
    blast_cancel,
    blast_pause,
    blast_queue,
    blast_resend_unknown,
    blast_resume,
)
from .models import AuditRecord, Blast, BlastRecipient, Device, StatusHistory
from .recipients import normalize_phone
from .reporting.funnels import blast_funnel, blast_funnels
from .selectors import blast_eta
from .sending.pacing import Pacing, device_read
from .services import blast_create, blast_edit, device_change, recipient_mark
from .variants import recipient_message

admin.site.site_header = "WhatsApp blasts"
admin.site.site_title = "WhatsApp blasts"
admin.site.index_title = "Blasts, recipients and their history"
admin.site.enable_nav_sidebar = False  # room for the funnel columns

Status = BlastRecipient.Status
STAGES = ["sent", "received", "read", "replied", "closed"]


class BlastChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        # One query for the whole page instead of one per row.
        funnels = blast_funnels(blast.pk for blast in self.result_list)
        for blast in self.result_list:
            blast.funnel = funnels[blast.pk]


def _by(request) -> Actor:
    return Actor(request.user, Via.ADMIN)


class ActionPermissions:
    """has_<action>_permission for the admin's `permissions=`: the same check as the pages and the API."""

    def has_send_permission(self, request):
        return may(request.user, "send")

    def has_resend_unknown_permission(self, request):
        return may(request.user, "resend_unknown")

    def has_mark_permission(self, request):
        return may(request.user, "mark")


def _stage_column(stage):
    @admin.display(description=stage)
    def column(self, blast):
        return getattr(blast.funnel, stage)

    return column


@admin.register(Blast)
class BlastAdmin(ActionPermissions, admin.ModelAdmin):
    list_display = ["tag", "follow_up_stage", "state", "created_at", "recipients", *STAGES]
    list_filter = ["created_at", "tag", "follow_up_stage", "state"]
    date_hierarchy = "created_at"
    search_fields = ["tag", "message"]
    raw_id_fields = ["parent"]
    create_fieldsets = [
        (None, {"fields": BlastCreateForm.Meta.fields}),
        ("Variants: test other wordings against the message", {"fields": BlastCreateForm.VARIANT_FIELDS}),
        ("Test first, then send the winner", {"fields": BlastCreateForm.TEST_FIELDS}),
        ("Recipients", {"fields": ["recipients_text", "recipients_file"]}),
    ]
    funnel_fields = ["funnel_table", "stuck_table", "recipients_link"]
    lifecycle_fields = [
        "state", "state_reason", "eta", "preview", "created_by", "created_at", "started_at", "finished_at",
    ]  # fmt: skip
    fieldsets = [
        (None, {"fields": [*BlastEditForm.Meta.fields, "variant_messages"]}),
        ("Sending", {"fields": lifecycle_fields}),
        ("Funnel", {"fields": funnel_fields}),
    ]
    actions = ["send", "pause", "resume", "cancel", "resend_unknown"]

    sent, received, read, replied, closed = (_stage_column(stage) for stage in STAGES)

    def get_changelist(self, request, **kwargs):
        return BlastChangeList

    def change_view(self, request, object_id, form_url="", extra_context=None):
        blast = self.get_object(request, object_id)
        buttons = allowed(request.user, BLAST_ACTIONS.get(blast.state, [])) if blast else []
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), "blast_buttons": buttons}
        )

    def has_add_permission(self, request):
        return may(request.user, "create")

    def has_change_permission(self, request, obj=None):
        return may(request.user, "edit")

    def has_delete_permission(self, request, obj=None):
        return False  # a blast is cancelled, never deleted: its numbers and its audit trail stay

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = BlastCreateForm if obj is None else BlastEditForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        return self.create_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        frozen = (
            []
            if obj.state == Blast.State.DRAFT
            else ["message", "device", "scheduled_at", "parent", "track_links"]
        )
        return ["variant_messages", *frozen, *self.funnel_fields, *self.lifecycle_fields]

    def save_model(self, request, obj, form, change):
        if change:
            return blast_edit(blast=obj, changed=form.changed_data, by=_by(request))
        created = blast_create(
            **form.blast_fields(),
            recipients=form.parsed,
            by=_by(request),
        )
        obj.pk = created.blast.pk
        obj.refresh_from_db()
        messages.info(
            request,
            f"{created.created} recipients added, {created.duplicates} duplicates dropped, "
            f"{created.opted_out} opted out (skipped)",
        )

    def response_add(self, request, obj, post_url_continue=None):
        response = super().response_add(request, obj, post_url_continue)
        if "_addanother" in request.POST or IS_POPUP_VAR in request.POST:
            return response
        return redirect("admin:blasts_blast_change", obj.pk)  # to its funnel, not back to the list

    def _each(self, request, queryset, service, done):
        """Run one lifecycle service per selected blast; say what happened, and why not where it did not."""
        changed = 0
        for blast in queryset:
            try:
                service(blast)
                changed += 1
            except ValidationError as exc:
                self.message_user(request, f"{blast}: {exc.messages[0]}", messages.WARNING)
        if changed:
            self.message_user(request, f"{done}: {changed} blast(s).", messages.SUCCESS)
        back = request.POST.get("next", "")
        if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
            return redirect(back)  # the blast page's buttons come back to the blast page
        return None

    @admin.action(description="Send: queue for the sender", permissions=["send"])
    def send(self, request, queryset):
        by = _by(request)
        return self._each(request, queryset, lambda blast: blast_queue(blast=blast, by=by), "Queued")

    @admin.action(description="Pause", permissions=["send"])
    def pause(self, request, queryset):
        by, reason = _by(request), f"Paused by {request.user}."
        return self._each(
            request, queryset, lambda blast: blast_pause(blast=blast, reason=reason, by=by), "Paused"
        )

    @admin.action(description="Resume", permissions=["send"])
    def resume(self, request, queryset):
        by = _by(request)
        return self._each(request, queryset, lambda blast: blast_resume(blast=blast, by=by), "Resumed")

    @admin.action(description="Cancel", permissions=["send"])
    def cancel(self, request, queryset):
        by, reason = _by(request), f"Cancelled by {request.user}."
        return self._each(
            request, queryset, lambda blast: blast_cancel(blast=blast, reason=reason, by=by), "Cancelled"
        )

    @admin.action(
        description="Resend recipients whose send is unknown (some may get it twice)",
        permissions=["resend_unknown"],
    )
    def resend_unknown(self, request, queryset):
        by = _by(request)
        return self._each(
            request, queryset, lambda blast: blast_resend_unknown(blast=blast, by=by), "Requeued"
        )

    @admin.display(description="ETA")
    def eta(self, blast):
        eta = blast_eta(blast)
        if eta is None:
            return "-"
        left = blast_funnel(blast.pk).not_sent
        rate = Pacing.for_device(device_read(blast.device)).rate_per_minute
        pace = f"at {rate:g} a minute" if rate else "unpaced"
        return f"{timezone.localtime(eta):%Y-%m-%d %H:%M}: {left} to send, {pace}, on device {blast.device}"

    @admin.display(description="variants")
    def variant_messages(self, blast):
        if not blast.variants:
            return "None: every recipient gets the message."
        return format_html_join("", "<p><strong>{}</strong> {}</p>", blast.messages.items())

    @admin.display(description="message preview")
    def preview(self, blast):
        recipients = blast.recipients.select_related("blast", "contact").order_by("id")[:3]
        rows = [
            (f"{r.phone} ({r.variant})" if r.variant else r.phone, recipient_message(r)) for r in recipients
        ]
        return _table(rows)

    @admin.display(description="recipients")
    def recipients(self, blast):
        return blast.funnel.total

    @admin.display(description="funnel")
    def funnel_table(self, blast):
        funnel = blast_funnel(blast.pk)
        rows = [(stage.title(), _with_share(getattr(funnel, stage), funnel.sent)) for stage in STAGES[1:]]
        rows.insert(0, ("Sent", funnel.sent))
        rows += [
            ("Not sent yet", funnel.not_sent),
            ("Failed", funnel.failed),
            ("Unknown", funnel.unknown),
            ("Skipped", funnel.skipped),
        ]
        return _table(rows)

    @admin.display(description="stuck at (current status)")
    def stuck_table(self, blast):
        return _table((status.label, n) for status, n in blast_funnel(blast.pk).stuck())

    @admin.display(description="recipients")
    def recipients_link(self, blast):
        url = reverse("admin:blasts_blastrecipient_changelist") + f"?blast__id__exact={blast.pk}"
        return format_html('<a href="{}">See the recipients</a>', url)


def _with_share(count, sent):
    return f"{count} ({count / sent:.0%} of sent)" if sent else count


def _table(rows):
    body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
    return format_html("<table>{}</table>", body)


class StatusHistoryInline(admin.TabularInline):
    model = StatusHistory
    fields = ["from_status", "to_status", "source", "occurred_at", "recorded_at", "actor", "raw"]
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


class PhoneSearch:
    """Searching "012-345 6789" finds +60123456789: a term that is a phone number is searched as E.164."""

    def get_search_results(self, request, queryset, search_term):
        with suppress(ValueError):
            search_term = normalize_phone(search_term)
        return super().get_search_results(request, queryset, search_term)


@admin.register(BlastRecipient)
class BlastRecipientAdmin(ActionPermissions, PhoneSearch, admin.ModelAdmin):
    list_display = ["phone", "name", "blast", "status", "message_id", "status_changed_at"]
    list_filter = ["status", "blast__tag", "blast__follow_up_stage"]
    list_select_related = ["blast"]
    search_fields = ["phone", "name", "message_id"]
    readonly_fields = [
        "blast",
        "phone",
        "message_id",
        "status",
        "status_changed_at",
        "sent_at",
        "server_ack_at",
        "delivered_at",
        "read_at",
        "replied_at",
        "closed_at",
        "failed_at",
        "failure_reason",
        "send_response",
    ]
    inlines = [StatusHistoryInline]
    actions = ["mark_replied", "mark_closed"]

    def has_add_permission(self, request):
        return False  # recipients are added with their blast

    def has_delete_permission(self, request, obj=None):
        return False  # taking one out would change a funnel with no trace

    def _mark(self, request, queryset, status):
        recipients, by = list(queryset), _by(request)
        changed = sum(recipient_mark(recipient=recipient, status=status, by=by) for recipient in recipients)
        unchanged = len(recipients) - changed
        self.message_user(
            request,
            f"Marked {changed} {status.label.lower()}; {unchanged} were there or past it already.",
            messages.SUCCESS,
        )

    @admin.action(description="Mark selected recipients replied", permissions=["mark"])
    def mark_replied(self, request, queryset):
        self._mark(request, queryset, Status.REPLIED)

    @admin.action(description="Mark selected recipients closed (sale made)", permissions=["mark"])
    def mark_closed(self, request, queryset):
        self._mark(request, queryset, Status.CLOSED)


class AppendOnly:
    """A log the services append to: read here, never added, changed or deleted (superusers neither)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(StatusHistory)
class StatusHistoryAdmin(AppendOnly, admin.ModelAdmin):
    list_display = ["recipient", "from_status", "to_status", "source", "occurred_at", "recorded_at", "actor"]
    list_filter = ["source", "to_status"]
    list_select_related = ["recipient", "actor"]
    search_fields = ["recipient__phone", "recipient__message_id"]


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = [
        "device_id",
        "label",
        "rate_per_minute",
        "hourly_cap",
        "daily_cap",
        "window_start",
        "window_end",
    ]
    readonly_fields = ["next_slot_at", "blocked_until", "hour_start", "hour_count", "day", "day_count"]
    fieldsets = [
        (None, {"fields": ["device_id", "label"]}),
        ("Pacing (empty: the SEND_* settings)", {"fields": [
            "rate_per_minute", "jitter", "hourly_cap", "daily_cap", "window_start", "window_end", "days", "time_zone",
        ]}),
        ("Now", {"fields": readonly_fields}),
    ]  # fmt: skip

    def has_add_permission(self, request):
        return may(request.user, "device")

    def has_change_permission(self, request, obj=None):
        return may(request.user, "device")

    def has_delete_permission(self, request, obj=None):
        return False  # its pacing counters keep the device's caps honest; change it instead

    def save_model(self, request, obj, form, change):
        device_change(device=obj, changed=form.changed_data, by=_by(request))


@admin.register(AuditRecord)
class AuditRecordAdmin(AppendOnly, admin.ModelAdmin):
    """The audit trail, read-only for everyone: rows are only ever added, by the services."""

    list_display = ["at", "actor_name", "via", "action", "blast", "about"]
    list_filter = ["action", "via", "at"]
    list_select_related = ["blast"]
    search_fields = ["actor_name", "about", "blast__tag"]
    date_hierarchy = "at"


# Each capability's admin registers its models when imported (Django looks in blasts.admin only).
from .contacts import admin as contacts_admin  # noqa: E402, F401
from .opt_outs import admin as opt_outs_admin  # noqa: E402, F401
from .segments import admin as segments_admin  # noqa: E402, F401
