"""This capability's admin pages (imported by blasts/admin.py, where Django looks): contacts, searched
and filtered, changed through the same service as the pages (so every change is audited), and tags."""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from ..access import may
from ..audit import Actor, Via
from ..models import Contact, ContactTag
from .book import contact_create, contact_delete, contact_edit, contact_tag_add
from .forms import ContactAdminForm
from .selectors import contacts_search


def _by(request) -> Actor:
    return Actor(request.user, Via.ADMIN)


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    form = ContactAdminForm
    list_display = ["phone", "name", "tag_list", "last_seen_at", "first_seen_at"]
    list_filter = ["tags", "first_seen_at", "last_seen_at"]
    search_fields = ["phone", "name"]  # searched as the contact page searches: contacts_search
    search_help_text = "A name, or a phone number in any format."
    autocomplete_fields = ["tags"]
    show_full_result_count = False  # a million contacts: one count is enough

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("tags")

    def get_search_results(self, request, queryset, search_term):
        return contacts_search(queryset, search_term), False

    def get_readonly_fields(self, request, obj=None):
        return ["phone", "first_seen_at", "last_seen_at", "timeline"] if obj else []

    def get_fields(self, request, obj=None):
        fields = ["phone", "name", "attributes", "tags"]
        return [*fields, "first_seen_at", "last_seen_at", "timeline"] if obj else fields

    def has_add_permission(self, request):
        return may(request.user, "contact_edit")

    def has_change_permission(self, request, obj=None):
        return may(request.user, "contact_edit")

    @admin.display(description="tags")
    def tag_list(self, contact):
        return ", ".join(tag.name for tag in contact.tags.all())

    @admin.display(description="timeline")
    def timeline(self, contact):
        count = contact.recipients.count()
        recipients = reverse("admin:blasts_blastrecipient_changelist") + f"?contact__id__exact={contact.pk}"
        return format_html(
            '<a href="{}">Its timeline across every blast</a> · <a href="{}">its {} recipient row{}</a>',
            reverse("contact-detail", args=[contact.pk]),
            recipients,
            count,
            "" if count == 1 else "s",
        )

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {
            "name": data["name"],
            "attributes": data["attributes"],
            "tags": [t.name for t in data["tags"]],
        }
        if change:
            contact_edit(contact=obj, by=_by(request), **fields)
        else:
            obj.pk = contact_create(phone=data["phone"], by=_by(request), **fields).pk
            obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        pass  # the service saved the tags (and there are no inlines)

    def get_deleted_objects(self, objs, request):
        deleted, counts, lacking, protected = super().get_deleted_objects(objs, request)
        # A contact's recipients are protected, never deleted with it: say that, not that the
        # user may not delete recipients (which nobody may).
        return deleted, counts, set() if protected else lacking, protected

    def delete_model(self, request, obj):
        try:
            contact_delete(contact=obj, by=_by(request))
        except ValidationError as exc:  # messaged since the confirmation page: refused in words
            self.message_user(request, exc.messages[0], messages.ERROR)

    def delete_queryset(self, request, queryset):
        for contact in queryset:
            self.delete_model(request, contact)


@admin.register(ContactTag)
class ContactTagAdmin(admin.ModelAdmin):
    """Tags are put on contacts (the contact's page, an import, the API); here they are looked up and
    added. Never renamed or deleted here: segments name them."""

    list_display = ["name", "contacts"]
    search_fields = ["name"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(contact_count=Count("contacts"))

    @admin.display(description="contacts", ordering="contact_count")
    def contacts(self, tag):
        url = f"{reverse('contact-list')}?{urlencode({'tag': tag.name})}"
        return format_html('<a href="{}">{}</a>', url, getattr(tag, "contact_count", ""))

    def has_add_permission(self, request):
        return may(request.user, "contact_edit")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        obj.pk = contact_tag_add(name=obj.name, by=_by(request)).pk
