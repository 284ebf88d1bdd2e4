"""API shapes. Field names follow the customer's roadmap: blast_tag, follow_up_stage, blast_id."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .audit import Actor, Via
from .follow_ups import MAX_AGE_HOURS
from .models import AuditRecord, Blast, BlastRecipient, StatusCheck, StatusHistory, VariantTest
from .recipients import parse_recipients
from .services import blast_create
from .statuses import FOLLOW_UP_FROM
from .variants import MAX_VARIANTS, TEST_SHARES

Status = BlastRecipient.Status
STATUS_NAMES = [s.name for s in Status]


@extend_schema_field({"type": "string", "enum": STATUS_NAMES})
class StatusNameField(serializers.Field):
    """A status as its gateway-style name (READ_ACK), not its ladder number."""

    def to_representation(self, value):
        return Status(value).name


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "example": "+60123456789"},
            {
                "type": "object",
                "properties": {
                    "phone": {"type": "string"},
                    "name": {"type": "string"},
                    "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        ]
    }
)
class RecipientInputField(serializers.Field):
    """One recipient: "+60123456789" or {"phone": "+60123456789", "name": "Aisyah",
    "attributes": {"city": "Ipoh"}} (the attributes are kept on the contact, for placeholders)."""

    def to_internal_value(self, data):
        attributes = {}
        if isinstance(data, str):
            phone, name = data, ""
        elif isinstance(data, dict) and isinstance(data.get("phone"), str):
            phone, name, attributes = data["phone"], data.get("name") or "", data.get("attributes") or {}
            if not isinstance(name, str):
                raise serializers.ValidationError("name must be a string.")
            if not isinstance(attributes, dict) or not all(
                isinstance(value, str | int | float) and not isinstance(value, bool)
                for value in attributes.values()
            ):
                raise serializers.ValidationError('attributes must be an object of texts: {"city": "Ipoh"}.')
            if extra := set(data) - {"phone", "name", "attributes"}:
                raise serializers.ValidationError(f"Unknown keys: {', '.join(sorted(map(str, extra)))}.")
        else:
            raise serializers.ValidationError('Give a phone number, or {"phone": "...", "name": "..."}.')
        # Checked here, per item, so one answer names every bad recipient by its index.
        problem = parse_recipients([("", phone, name)]).row_errors.get("")
        if problem:
            raise serializers.ValidationError(problem)
        return phone, name, attributes


def with_device(data: dict) -> dict:
    """A new blast's fields with its device: the one given, else WSAPME_DEVICE, else a 400 on `device`."""
    data.setdefault("device", settings.WSAPME_DEVICE)
    if not data["device"]:
        raise serializers.ValidationError({"device": ["Give the WSAPME device (no default is configured)."]})
    return data


class BlastCreateSerializer(serializers.Serializer):
    blast_tag = serializers.CharField(max_length=100)
    follow_up_stage = serializers.CharField(max_length=50, default="Initial")
    message = serializers.CharField()
    recipients = serializers.ListField(child=RecipientInputField(), allow_empty=True)
    device = serializers.CharField(max_length=32, required=False)
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True)
    variants = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        default=list,
        max_length=MAX_VARIANTS - 1,
        help_text="Variants B to E's messages (A's is `message`): recipients are split between them at random, evenly.",
    )
    track_links = serializers.BooleanField(
        default=True, help_text="Each http(s) link becomes a per-recipient short link that counts clicks."
    )
    test_share = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=TEST_SHARES[0],
        max_value=TEST_SHARES[1],
        help_text="Test then send the winner: the variants go to this percent of the recipients first.",
    )
    test_hours = serializers.FloatField(
        default=4.0,
        min_value=0.01,
        max_value=7 * 24,
        help_text="…then, this long after the test's last send,",
    )
    test_metric = serializers.ChoiceField(
        choices=VariantTest.Metric.choices,
        default="replied",
        help_text="…the rest get the variant best at this.",
    )

    def validate_recipients(self, rows):
        parsed = parse_recipients((str(index), *row) for index, row in enumerate(rows))
        if parsed.row_errors:
            raise serializers.ValidationError({index: [error] for index, error in parsed.row_errors.items()})
        if parsed.errors:
            raise serializers.ValidationError(parsed.errors)
        return parsed

    def validate(self, data):
        return with_device(data)

    def create(self, validated):
        try:
            return blast_create(
                tag=validated["blast_tag"],
                follow_up_stage=validated["follow_up_stage"],
                message=validated["message"],
                recipients=validated["recipients"],
                device=validated["device"],
                scheduled_at=validated.get("scheduled_at"),
                variants=validated["variants"],
                track_links=validated["track_links"],
                test=VariantTest(
                    share=validated["test_share"],
                    wait=timedelta(hours=validated["test_hours"]),
                    metric=validated["test_metric"],
                )
                if validated.get("test_share")
                else None,
                by=Actor(self.context["request"].user, Via.API),
            )
        except DjangoValidationError as exc:  # e.g. a placeholder no recipient has: a 400 on its field
            raise serializers.ValidationError(serializers.as_serializer_error(exc)) from None


class BlastCreatedSerializer(serializers.Serializer):
    blast_id = serializers.IntegerField(source="blast.pk")
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    opted_out = serializers.IntegerField(help_text="Created as SKIPPED: on the opt-out list.")
    canaries = serializers.IntegerField(help_text="The team's canary phones added (left out of rates).")


class FollowUpSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=[*FOLLOW_UP_FROM],
        help_text="The funnel cell: recipients now at this status, or READ_NOT_CLICKED (read, no click on a "
        "tracked link, not replied) or CLICKED_NOT_REPLIED.",
    )
    min_age_hours = serializers.IntegerField(
        min_value=0,
        max_value=MAX_AGE_HOURS,
        default=0,
        help_text="…standing there for at least this long (read, not clicked: since reading; clicked, not "
        "replied: since the first click).",
    )
    message = serializers.CharField()


class RatesSerializer(serializers.Serializer):
    received = serializers.FloatField()
    read = serializers.FloatField()
    replied = serializers.FloatField()
    closed = serializers.FloatField()


class ClicksSerializer(serializers.Serializer):
    clicked = serializers.IntegerField(
        help_text="Sent recipients who clicked a tracked link (previews left out)."
    )
    rate = serializers.FloatField(help_text="Clicked as a share of sent.")
    first_click_at = serializers.DateTimeField(allow_null=True)
    median_seconds_to_click = serializers.FloatField(
        allow_null=True, help_text="Median time from sending to the first click; null with no click."
    )


class RateSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True, help_text="A share of sent; null with none sent.")
    low = serializers.FloatField(help_text="Its 95% interval (Wilson).")
    high = serializers.FloatField()


class AgainstASerializer(serializers.Serializer):
    difference = serializers.FloatField(allow_null=True, help_text="This variant's rate minus A's.")
    low = serializers.FloatField(allow_null=True, help_text="Its 95% interval (Newcombe).")
    high = serializers.FloatField(allow_null=True)
    beyond_noise = serializers.BooleanField()
    verdict = serializers.CharField(help_text='In words, as the pages say it: "B is higher, beyond noise".')


class StagesSerializer(serializers.Serializer):
    """The funnel's five counts, cumulative (Funnel.stages)."""

    sent = serializers.IntegerField()
    received = serializers.IntegerField()
    read = serializers.IntegerField()
    replied = serializers.IntegerField()
    closed = serializers.IntegerField()


class VariantMetricsSerializer(StagesSerializer):
    variant = serializers.CharField(help_text="A to E.")
    message = serializers.CharField()
    clicked = serializers.IntegerField()
    reply_rate = RateSerializer()
    click_rate = RateSerializer()
    against_a = serializers.DictField(
        child=AgainstASerializer(), help_text='"replied" and "clicked" against A; empty for A.'
    )


class MetricsSerializer(StagesSerializer):
    failed = serializers.IntegerField()
    unknown = serializers.IntegerField()
    skipped = serializers.IntegerField()
    queued = serializers.IntegerField(help_text="Not sent yet (queued or in flight).")
    total = serializers.IntegerField()
    rates = RatesSerializer(help_text="Each stage as a share of sent.")
    clicks = ClicksSerializer(help_text="Clicks on tracked links, beside the funnel.")
    variants = VariantMetricsSerializer(
        many=True, required=False, help_text="Per variant, in a blast's own answers (not in the list)."
    )


class VariantTestSerializer(serializers.ModelSerializer):
    wait_hours = serializers.SerializerMethodField()

    class Meta:
        model = VariantTest
        fields = ["share", "wait_hours", "metric", "ends_at", "decided_at", "winner", "verdict"]
        read_only_fields = fields
        extra_kwargs = {
            "ends_at": {"help_text": "When the winner is chosen: set once the test's sends are done."}
        }

    def get_wait_hours(self, test) -> float:
        return test.wait.total_seconds() / 3600


class BlastSerializer(serializers.ModelSerializer):
    blast_id = serializers.IntegerField(source="pk", read_only=True)
    blast_tag = serializers.CharField(source="tag")
    variants = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Variants B to E's messages; A's is `message`.",
    )
    variant_test = VariantTestSerializer(
        read_only=True, allow_null=True, default=None, help_text="Test then send the winner; null: none."
    )
    metrics = serializers.SerializerMethodField()

    class Meta:
        model = Blast
        fields = [
            "blast_id", "blast_tag", "follow_up_stage", "message", "variants", "variant_test", "track_links", "device", "state",
            "state_reason", "scheduled_at", "parent", "created_at", "started_at", "finished_at", "metrics",
        ]  # fmt: skip

    @extend_schema_field(MetricsSerializer)
    def get_metrics(self, blast):
        metrics = {
            **self.context["funnels"][blast.pk].metrics(),
            "clicks": ClicksSerializer(self.context["clicks"][blast.pk].metrics()).data,
        }
        if blast.pk in self.context.get("variants", {}):
            metrics["variants"] = [result.metrics() for result in self.context["variants"][blast.pk]]
        return metrics


class RecipientSerializer(serializers.ModelSerializer):
    status = StatusNameField()

    class Meta:
        model = BlastRecipient
        fields = [
            "id", "blast", "phone", "name", "status", "message_id", "status_changed_at", "sent_at", "server_ack_at",
            "delivered_at", "read_at", "replied_at", "closed_at", "failed_at", "failure_reason", "reply_text",
            "is_canary", "mark_note", "deal_value", "variant", "clicked_at",
        ]  # fmt: skip


class HistorySerializer(serializers.ModelSerializer):
    from_status = StatusNameField()
    to_status = StatusNameField()
    actor = serializers.CharField(source="actor.username", default=None)

    class Meta:
        model = StatusHistory
        fields = ["id", "from_status", "to_status", "source", "occurred_at", "recorded_at", "actor", "raw"]


class MarkSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["REPLIED", "CLOSED"])
    note = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    deal_value = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=0, required=False, allow_null=True, default=None,
        help_text="The sale's value (RM), with CLOSED.",
    )  # fmt: skip


class StuckSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=STATUS_NAMES)
    label = serializers.CharField()
    probable_cause = serializers.CharField()
    follow_up = serializers.BooleanField(help_text="Whether a follow-up can be made for this cell.")
    count = serializers.IntegerField()
    percent = serializers.FloatField()
    ages = serializers.DictField(child=serializers.IntegerField(), help_text="0-1h, 1-6h, 6-24h, 1-3d, >3d")


class StatusCheckSerializer(serializers.ModelSerializer):
    """A "check statuses now": its messages are asked about by the poller, not in the request."""

    class Meta:
        model = StatusCheck
        fields = ["id", "requested_at", "queued", "checked", "updated", "errors", "finished_at"]
        read_only_fields = fields
        extra_kwargs = {
            "queued": {"help_text": "Unfinished messages marked for the check."},
            "checked": {"help_text": "Asked about so far (errors included)."},
            "updated": {"help_text": "Whose status the check moved."},
            "errors": {"help_text": "The gateway could not answer about these."},
            "finished_at": {"help_text": "Null while the check runs."},
        }


class CheckStatusSerializer(serializers.Serializer):
    check = StatusCheckSerializer(allow_null=True, help_text="Null when there is nothing to check.")
    detail = serializers.CharField()


class BlastDetailSerializer(BlastSerializer):
    status_check = serializers.SerializerMethodField()

    class Meta(BlastSerializer.Meta):
        fields = [*BlastSerializer.Meta.fields, "status_check"]

    @extend_schema_field(StatusCheckSerializer(allow_null=True, help_text="The latest status check."))
    def get_status_check(self, blast):
        check = blast.status_checks.first()
        return StatusCheckSerializer(check).data if check else None


class AuditSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name", help_text="The login; empty when the system acted.")
    action = serializers.ChoiceField(choices=AuditRecord.Action.choices)
    via = serializers.ChoiceField(
        choices=AuditRecord.Via.choices, help_text="page, api, admin, command or system."
    )

    class Meta:
        model = AuditRecord
        fields = ["id", "at", "actor", "via", "action", "about", "detail"]
