from rest_framework import serializers

from ..models import OptOut
from ..recipients import normalize_phone
from .services import opt_out_since, opt_out_since_words

REASON_MAX = OptOut._meta.get_field("reason").max_length


class OptOutSerializer(serializers.ModelSerializer):
    source = serializers.ChoiceField(
        choices=OptOut.Source.choices,
        help_text="Where the entry came from: a STOP reply (see reply_text and blast_id), an import, a person.",
    )
    blast_id = serializers.IntegerField(allow_null=True, help_text="The blast a STOP replied to.")
    blast_tag = serializers.CharField(source="blast.tag", default=None, allow_null=True)
    added_by = serializers.CharField(
        source="added_by.username", default=None, allow_null=True, help_text="The login that added it."
    )

    class Meta:
        model = OptOut
        fields = ["id", "phone", "created_at", "source", "reason", "reply_text", "blast_id", "blast_tag", "added_by"]  # fmt: skip
        read_only_fields = fields


class OptOutCreateSerializer(serializers.Serializer):
    phone = serializers.CharField(max_length=40, help_text="Any format; local numbers are read as Malaysian.")
    reason = serializers.CharField(max_length=REASON_MAX)

    def validate_phone(self, value):
        try:
            phone = normalize_phone(value)
        except ValueError as exc:
            raise serializers.ValidationError(f"This is {exc}.") from None
        if listed := opt_out_since(phone):
            raise serializers.ValidationError(opt_out_since_words(listed))
        return phone


class OptOutRemoveSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=REASON_MAX, help_text="Why: kept in the audit trail.")
