"""Forms for changing a contact: the contact page's and the admin's."""

from django import forms
from django.core.exceptions import ValidationError

from ..models import Contact, ContactTag
from ..recipients import normalize_phone
from .book import TAGS_MAX, attributes_check

TAG_MAX_LENGTH = ContactTag._meta.get_field("name").max_length


def attributes_as_text(attributes: dict) -> str:
    """Attributes as the form shows them: one "key: value" a line."""
    return "\n".join(f"{key}: {value}" for key, value in attributes.items())


class ContactEditForm(forms.Form):
    """A contact's name, attributes and tags, as a person writes them on the contact page."""

    name = forms.CharField(max_length=Contact._meta.get_field("name").max_length, required=False)
    attributes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "placeholder": "city: Ipoh\nlast_order: 2026-03-01"}),
        required=False,
        help_text="One a line: name, a colon, the value (city: Ipoh). A line taken out removes that "
        "attribute. Messages use them as {city}.",
    )
    tags = forms.CharField(
        required=False,
        help_text="Separated by commas: VIP, Raya 2026 buyers. A tag taken out is taken off this contact.",
    )

    def clean_attributes(self):
        attributes = {}
        for number, line in enumerate(self.cleaned_data["attributes"].splitlines(), start=1):
            if not line.strip():
                continue
            key, colon, value = line.partition(":")
            if not colon or not key.strip():
                raise ValidationError(f"Line {number} has no “name: value”: write it like city: Ipoh.")
            attributes[key.strip()] = value.strip()
        try:
            return attributes_check(attributes)
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None

    def clean_tags(self):
        tags = [tag.strip() for tag in self.cleaned_data["tags"].split(",") if tag.strip()]
        if long := [tag for tag in tags if len(tag) > TAG_MAX_LENGTH]:
            raise ValidationError(
                f"“{long[0][:40]}…” is longer than {TAG_MAX_LENGTH} characters: shorten it."
            )
        if len(tags) > TAGS_MAX:
            raise ValidationError(f"At most {TAGS_MAX} tags on one contact.")
        return tags


class ContactAdminForm(forms.ModelForm):
    """The admin's: the number in any format (stored as E.164), the attributes an object of texts."""

    class Meta:
        model = Contact
        fields = ["phone", "name", "attributes", "tags"]

    def clean_phone(self):
        try:
            return normalize_phone(self.cleaned_data["phone"])
        except ValueError as exc:
            raise ValidationError(f"This is {exc}.") from None

    def clean_attributes(self):
        try:
            return attributes_check(self.cleaned_data["attributes"] or {})
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None
