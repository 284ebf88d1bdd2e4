"""The contacts API's shapes: a contact, its timeline across every blast, and what a person may send."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import BlastRecipient, Contact, ContactTag
from ..opt_outs.serializers import OptOutSerializer
from ..recipients import normalize_phone
from ..serializers import StatusNameField
from .book import TAGS_MAX, attributes_check

ATTRIBUTES_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": "string"},
    "example": {"city": "Ipoh"},
}


@extend_schema_field(ATTRIBUTES_SCHEMA)
class AttributesField(serializers.Field):
    """A flat object of texts ({"city": "Ipoh"}); keys become placeholder names (“Last Order” is
    last_order), an empty value is no value."""

    def to_internal_value(self, data):
        try:
            return attributes_check(data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def to_representation(self, value):
        return value


class ContactSerializer(serializers.ModelSerializer):
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    attributes = AttributesField(read_only=True)
    opted_out = serializers.BooleanField(read_only=True, help_text="On the opt-out list: never messaged.")
    messages_sent = serializers.IntegerField(read_only=True, help_text="Sent to it, across every blast.")

    class Meta:
        model = Contact
        fields = [
            "id", "phone", "name", "attributes", "tags", "first_seen_at", "last_seen_at", "opted_out",
            "messages_sent",
        ]  # fmt: skip


class TimelineSerializer(serializers.ModelSerializer):
    """One message to the contact: its blast, where it stands, when it reached each stage."""

    recipient = serializers.IntegerField(source="pk", read_only=True)
    blast_tag = serializers.CharField(source="blast.tag", read_only=True)
    follow_up_stage = serializers.CharField(source="blast.follow_up_stage", read_only=True)
    status = StatusNameField()
    received_at = serializers.DateTimeField(source="delivered_at", read_only=True)

    class Meta:
        model = BlastRecipient
        fields = [
            "recipient", "blast", "blast_tag", "follow_up_stage", "status", "sent_at", "received_at", "read_at",
            "replied_at", "reply_text", "closed_at", "deal_value", "mark_note", "failed_at", "failure_reason",
        ]  # fmt: skip


class TimelinePageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = TimelineSerializer(many=True)


class ContactDetailSerializer(ContactSerializer):
    opt_out = OptOutSerializer(  # the opt-out list's own shape
        source="opt_out_entry", allow_null=True, read_only=True, help_text="Its opt-out, where it came from."
    )
    timeline = TimelinePageSerializer(
        read_only=True, help_text="Every message to the contact, newest blast first (paginated: ?page=)."
    )

    class Meta(ContactSerializer.Meta):
        fields = [*ContactSerializer.Meta.fields, "opt_out", "timeline"]


class ContactChangeSerializer(serializers.Serializer):
    """PATCH: only the fields given change. Attributes are replaced as a whole (a key left out or
    empty is removed); tags are set to exactly these."""

    name = serializers.CharField(
        max_length=Contact._meta.get_field("name").max_length, allow_blank=True, required=False
    )
    attributes = AttributesField(required=False)
    tags = serializers.ListField(
        child=serializers.CharField(max_length=ContactTag._meta.get_field("name").max_length),
        max_length=TAGS_MAX,
        required=False,
    )

    def validate(self, data):
        unknown = set(self.initial_data) - set(self.fields) if isinstance(self.initial_data, dict) else set()
        if unknown:
            raise serializers.ValidationError(
                {str(key)[:50]: [self.unknown_message(key)] for key in sorted(map(str, unknown))[:10]}
            )
        return data

    def unknown_message(self, key) -> str:
        if key == "phone":
            return "A contact's number does not change: create a contact with the new number."
        return f"Not a contact field: give {', '.join(self.fields)}."


class PhoneField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):  # a JSON number has lost its + or its leading 0 already
            raise serializers.ValidationError('Give the number as a text, e.g. "+60123456789".')
        return super().to_internal_value(data)


class ContactCreateSerializer(ContactChangeSerializer):
    """POST: a new contact. Its number in any format (local numbers are read as Malaysian); a number
    that is a contact already is refused (400 on phone, naming its id): PATCH that one instead."""

    phone = PhoneField(max_length=40)

    def validate_phone(self, value):
        try:
            return normalize_phone(value)
        except ValueError as exc:
            raise serializers.ValidationError(f"This is {exc}.") from None

    def unknown_message(self, key) -> str:
        return f"Not a contact field: give {', '.join(self.fields)}."
