"""The segments API's shapes: a segment with its rules (checked by rules_clean), its members, a blast
made from it."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..audit import Actor, Via
from ..models import Contact, Segment
from ..serializers import with_device
from ..statuses import STAGE_FLOOR
from .rules import KINDS, MAX_RULES, OPS, rule_words, rules_clean
from .services import segment_save

RULE_SCHEMA = {
    "type": "object",
    "required": ["kind"],
    "properties": {
        "kind": {"type": "string", "enum": list(KINDS)},
        "op": {"type": "string", "enum": sorted({op for ops in OPS.values() for op in ops})},
        "key": {"type": "string", "description": "attribute: its key, e.g. city"},
        "value": {"type": "string", "description": "tag: the contact's tag; attribute: the value"},
        "stage": {"type": "string", "enum": list(STAGE_FLOOR)},
        "tag": {"type": "string", "description": "reached/not_reached: only blasts with this tag"},
        "follow_up_stage": {
            "type": "string",
            "description": "reached/not_reached: only this follow-up stage",
        },
        "days": {"type": "integer", "nullable": True, "description": "within the last days (1-3650)"},
        "times": {"type": "integer", "description": "messaged_fewer: fewer than this many sends"},
    },
    "example": {"kind": "reached", "stage": "read", "tag": "Raya", "days": 30},
}


def as_400(exc: DjangoValidationError) -> serializers.ValidationError:
    return serializers.ValidationError(serializers.as_serializer_error(exc))


@extend_schema_field({"type": "array", "maxItems": MAX_RULES, "items": RULE_SCHEMA})
class RulesField(serializers.JSONField):
    """The rules, checked and put in their stored shape by rules_clean: a 400 names each wrong rule."""

    def to_internal_value(self, data):
        try:
            return rules_clean(super().to_internal_value(data))
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None


class SegmentSerializer(serializers.ModelSerializer):
    rules = RulesField(
        default=list,
        help_text="Conditions on a contact (see the rule schema); an empty list is every contact. "
        "Opted-out numbers are never members.",
    )
    rules_words = serializers.SerializerMethodField(help_text="Each rule as a sentence.")
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)

    class Meta:
        model = Segment
        fields = ["id", "name", "match", "rules", "rules_words", "created_by", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def get_rules_words(self, segment) -> list[str]:
        return [rule_words(rule) for rule in segment.rules]

    def _save(self, segment: Segment, validated: dict) -> Segment:
        for name, value in validated.items():
            setattr(segment, name, value)
        try:
            return segment_save(segment=segment, by=Actor(self.context["request"].user, Via.API))
        except DjangoValidationError as exc:
            raise as_400(exc) from None

    def create(self, validated):
        return self._save(Segment(), validated)

    def update(self, segment, validated):
        return self._save(segment, validated)


class SegmentPreviewSerializer(serializers.Serializer):
    match = serializers.ChoiceField(choices=Segment.Match.choices, default=Segment.Match.ALL)
    rules = RulesField(default=list)


class MemberSerializer(serializers.ModelSerializer):
    tags = serializers.SerializerMethodField()

    class Meta:
        model = Contact
        fields = ["id", "phone", "name", "tags", "attributes"]

    def get_tags(self, contact) -> list[str]:
        return [tag.name for tag in contact.tags.all()]  # prefetched


class CountSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Members now (opted-out numbers never among them).")


class PreviewSerializer(CountSerializer):
    sample = MemberSerializer(many=True, help_text="The members seen most recently, up to 20.")


class SegmentBlastSerializer(serializers.Serializer):
    tag = serializers.CharField(max_length=100, help_text="The new blast's tag (campaign name).")
    follow_up_stage = serializers.CharField(max_length=50, default="Initial")
    message = serializers.CharField(
        help_text="Placeholders: {name}, {first_name}, {phone}, attributes ({city|your area})."
    )
    device = serializers.CharField(max_length=32, required=False)
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate(self, data):
        return with_device(data)
