"""The contact pages: the list (searched and filtered like the API), one contact with its timeline
across every blast, and changing a contact."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect
from django.urls import reverse
from django.views.generic import DetailView
from django_filters.views import FilterView

from ..access import may
from ..models import Contact
from ..views import StaffOnly, by_page
from .book import contact_edit
from .filters import ContactFilter
from .forms import ContactEditForm, attributes_as_text
from .selectors import contact_opt_out, contact_tag_names, contact_timeline, contacts_page

TIMELINE_PAGE = 50


class ContactListView(StaffOnly, FilterView):
    """Contacts newest seen first, a page at a time (Older / Newer: no count of a million rows)."""

    filterset_class = ContactFilter
    queryset = Contact.objects.all()
    template_name = "blasts/contact_list.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        params = self.request.GET
        page = contacts_page(self.object_list, after=params.get("after", ""), before=params.get("before", ""))
        kept = params.copy()
        for name in ("after", "before"):
            kept.pop(name, None)
        context.update(
            page=page,
            filters=kept.urlencode(),
            tag_choices=contact_tag_names(),
            filtered=any(kept.values()),
        )
        return context


class ContactDetailView(StaffOnly, DetailView):
    """One person: attributes, tags, opt-out and every message across every blast, each with the
    recipient page's mark replied / closed; and, for those who may, the form that changes it."""

    queryset = Contact.objects.prefetch_related("tags")
    template_name = "blasts/contact_detail.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        contact, params = self.object, self.request.GET
        if "edit_form" not in context and may(self.request.user, "contact_edit"):
            context["edit_form"] = ContactEditForm(initial=edit_initial(contact))
        here = reverse("contact-detail", args=[contact.pk])
        context.update(
            opt_out=contact_opt_out(contact),
            timeline=Paginator(contact_timeline(contact), TIMELINE_PAGE).get_page(params.get("page")),
            here=f"{here}?{params.urlencode()}" if params else here,
            mark_choices=[("REPLIED", "Replied"), ("CLOSED", "Closed (sale made)")],
        )
        return context


def edit_initial(contact: Contact) -> dict:
    return {
        "name": contact.name,
        "attributes": attributes_as_text(contact.attributes),
        "tags": ", ".join(tag.name for tag in contact.tags.all()),
    }


class ContactEditView(ContactDetailView):
    """Change a contact's name, attributes and tags from its page (audited); a mistake shows the page
    again with the form's errors and what was typed."""

    action = "contact_edit"
    http_method_names = ["post"]

    def post(self, request, *args, **kwargs):
        self.object = self.get_object()
        form = ContactEditForm(request.POST)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(edit_form=form))
        changed = contact_edit(contact=self.object, by=by_page(request), **form.cleaned_data)
        if changed:
            messages.success(request, f"Saved: {', '.join(changed)} changed.")
        else:
            messages.info(request, "Nothing changed.")
        return redirect("contact-detail", self.object.pk)
