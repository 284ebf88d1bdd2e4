"""The REST API: read-only viewsets with filters; every state change is an action that calls one service."""

from datetime import timedelta

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, renderers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from .access import NEEDS, may, refusal
from .audit import Actor, Via
from .filters import STAGES, BlastFilter, RecipientFilter
from .follow_ups import blast_create_follow_up
from .lifecycle import blast_cancel, blast_pause, blast_queue, blast_resume
from .models import Blast, BlastRecipient, StatusHistory
from .reporting.clicks import blasts_clicks
from .reporting.exports import recipients_csv_response
from .reporting.funnels import blast_funnels
from .reporting.variants import blast_variants
from .selectors import blast_stuck
from .serializers import (
    STATUS_NAMES,
    AuditSerializer,
    BlastCreatedSerializer,
    BlastCreateSerializer,
    BlastDetailSerializer,
    BlastSerializer,
    CheckStatusSerializer,
    FollowUpSerializer,
    HistorySerializer,
    MarkSerializer,
    MetricsSerializer,
    RecipientSerializer,
    StuckSerializer,
)
from .services import recipient_mark, recipients_exported
from .tracking.polling import blast_check_statuses, status_check_words

Status = BlastRecipient.Status


# Ids in URLs are ASCII digits: the router's default takes any text, and int() reads any Unicode
# digit ("\u0663", an Arabic-Indic three, is 3), so one blast would answer at many addresses.
ID = "[0-9]+"


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def paginate_queryset(self, queryset, request, view=None):
        # For the same reason ?page=\u0663 would be page 3: say what is wrong instead.
        for name in (self.page_query_param, self.page_size_query_param):
            if not request.query_params.get(name, "").isascii():
                raise ValidationError({name: ["Use the digits 0-9."]})
        return super().paginate_queryset(queryset, request, view)


class CSVRenderer(renderers.BaseRenderer):
    """Lets ?format=csv through content negotiation; the view streams the file itself."""

    media_type, format = "text/csv", "csv"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return b""


class ActionPermission(IsAdminUser):
    """Staff may read; each action needs its permission (access.NEEDS), else 403 naming it."""

    def has_permission(self, request, view):
        if not super().has_permission(request, view):
            return False
        action = view.action
        if action == "recipients" and getattr(request.accepted_renderer, "format", "") == "csv":
            action = "export"
        if action in NEEDS and not may(request.user, action):
            self.message = refusal(action)
            return False
        return True


def _by(request) -> Actor:
    return Actor(request.user, Via.API)


def _conflict(exc: DjangoValidationError) -> Response:
    return Response({"detail": exc.messages[0]}, status=status.HTTP_409_CONFLICT)


class BlastViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Blasts with their funnel metrics; filters by date, tag, follow-up stage and state."""

    queryset = Blast.objects.select_related("variant_test")
    serializer_class = BlastSerializer
    permission_classes = [ActionPermission]
    lookup_value_regex = ID
    pagination_class = Pagination
    filterset_class = BlastFilter
    filter_backends = [*viewsets.GenericViewSet.filter_backends, OrderingFilter]
    ordering_fields = ["created_at", "tag", "follow_up_stage", "state", "id"]
    ordering = ["-created_at", "-id"]

    def filter_queryset(self, queryset):
        # The list's filters (tag, stage, date, …) choose blasts; on one blast they would hide it.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def get_serializer_class(self):
        return BlastDetailSerializer if self.action == "retrieve" else BlastSerializer

    def get_serializer_context(self):
        return {
            **super().get_serializer_context(),
            "funnels": getattr(self, "funnels", {}),
            "clicks": getattr(self, "clicks", {}),
            "variants": getattr(self, "variants", {}),
        }

    def _with_funnels(self, blasts):
        ids = [blast.pk for blast in blasts]
        self.funnels, self.clicks = blast_funnels(ids), blasts_clicks(ids)  # a query each for the whole page
        if self.action != "list":  # one blast: its variants too (two queries a blast, so not for a page)
            self.variants = {blast.pk: blast_variants(blast) for blast in blasts if blast.variants}
        return self.get_serializer(blasts, many=True).data

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(self._with_funnels(page))

    @extend_schema(responses=BlastDetailSerializer)
    def retrieve(self, request, *args, **kwargs):
        """The blast, its metrics, and its recipients (paginated: ?page=)."""
        blast = self.get_object()
        data = self._with_funnels([blast])[0]
        recipients = self.paginate_queryset(blast.recipients.order_by("id"))
        data["recipients"] = self.get_paginated_response(RecipientSerializer(recipients, many=True).data).data
        return Response(data)

    @extend_schema(request=BlastCreateSerializer, responses={201: BlastCreatedSerializer})
    def create(self, request, *args, **kwargs):
        """Create a draft blast. Recipients are phone strings or {"phone", "name"}; nothing is created on error."""
        serializer = BlastCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        created = serializer.save()
        return Response(BlastCreatedSerializer(created).data, status=status.HTTP_201_CREATED)

    def _move(self, service, code=status.HTTP_200_OK):
        blast = self.get_object()
        try:
            service(blast)
        except DjangoValidationError as exc:
            return _conflict(exc)
        return Response(self._with_funnels([blast])[0], status=code)

    @extend_schema(
        request=None, responses={202: BlastSerializer, 409: OpenApiResponse(description="Not a draft.")}
    )
    @action(detail=True, methods=["post"])
    def send(self, request, pk=None):
        """Queue the blast; the sender worker sends it (at its scheduled time, or now)."""
        return self._move(lambda blast: blast_queue(blast=blast, by=_by(request)), status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None, responses={200: BlastSerializer, 409: OpenApiResponse(description="Not sending.")}
    )
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._move(
            lambda blast: blast_pause(blast=blast, reason=f"Paused by {request.user} (API).", by=_by(request))
        )

    @extend_schema(
        request=None, responses={200: BlastSerializer, 409: OpenApiResponse(description="Not paused.")}
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._move(lambda blast: blast_resume(blast=blast, by=_by(request)))

    @extend_schema(
        request=None, responses={200: BlastSerializer, 409: OpenApiResponse(description="Ended already.")}
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._move(
            lambda blast: blast_cancel(
                blast=blast, reason=f"Cancelled by {request.user} (API).", by=_by(request)
            )
        )

    @extend_schema(
        request=None,
        responses={
            202: CheckStatusSerializer,
            200: OpenApiResponse(CheckStatusSerializer, description="Nothing to check: `check` is null."),
        },
    )
    @action(detail=True, methods=["post"], url_path="check-status")
    def check_status(self, request, pk=None):
        """Have the poller ask WSAPME about every unfinished message of this blast; answers at once.

        202 with the check (the one already running, if there is one); follow it in this blast's
        `status_check`. 200 with no check when no sent message is waiting for a status.
        """
        check = blast_check_statuses(blast=self.get_object(), by=_by(request))
        answer = CheckStatusSerializer({"check": check, "detail": status_check_words(check)}).data
        return Response(answer, status=status.HTTP_202_ACCEPTED if check else status.HTTP_200_OK)

    @extend_schema(
        request=FollowUpSerializer,
        responses={201: BlastSerializer, 400: OpenApiResponse(description="No recipient in that cell.")},
    )
    @action(detail=True, methods=["post"], url_path="follow-up")
    def follow_up(self, request, pk=None):
        """A draft follow-up to one funnel cell: recipients now at `status` for at least `min_age_hours`.

        It is linked to this blast, on the next follow-up stage; membership is checked again before each send.
        """
        serializer = FollowUpSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            follow_up = blast_create_follow_up(
                parent=self.get_object(),
                status=data["status"],
                message=data["message"],
                min_age=timedelta(hours=data["min_age_hours"]),
                by=_by(request),
            )
        except DjangoValidationError as exc:  # the cell is empty, or the message names what nobody has
            errors = exc.message_dict if hasattr(exc, "error_dict") else {"status": exc.messages}
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        return Response(self._with_funnels([follow_up])[0], status=status.HTTP_201_CREATED)

    @extend_schema(responses=AuditSerializer(many=True), filters=False)
    @action(detail=True, pagination_class=None, filter_backends=[])
    def audit(self, request, pk=None):
        """Who did what to this blast, newest first: created, sent, paused, exported, … and automatic pauses."""
        records = self.get_object().audit.select_related("actor")
        return Response(AuditSerializer(records, many=True).data)

    @extend_schema(responses=MetricsSerializer)
    @action(detail=True)
    def metrics(self, request, pk=None):
        """Sent, received, read, replied, closed (cumulative), the rest apart, rates of sent, and clicks."""
        return Response(self._with_funnels([self.get_object()])[0]["metrics"])

    @extend_schema(responses=StuckSerializer(many=True), filters=False)
    @action(detail=True, url_path="stuck-recipients", pagination_class=None, filter_backends=[])
    def stuck_recipients(self, request, pk=None):
        """Recipients by current status in funnel order, with percentages and age buckets."""
        blast = self.get_object()
        return Response(blast_stuck(blast.pk, cancelled=blast.state == Blast.State.CANCELLED))

    @extend_schema(
        responses={200: RecipientSerializer(many=True)},
        filters=False,
        parameters=[
            OpenApiParameter("status", enum=STATUS_NAMES, description="Current status, e.g. READ_ACK."),
            OpenApiParameter("stage", enum=[*STAGES], description="Reached this funnel stage (or off it)."),
            OpenApiParameter("clicked", bool, description="true: clicked a tracked link; false: not."),
            OpenApiParameter("q", description="Phone, name or message id contains."),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
            OpenApiParameter(
                "format", enum=["json", "csv"], description="csv: the whole filtered list as a file."
            ),
        ],
    )
    @action(
        detail=True, renderer_classes=[renderers.JSONRenderer, renderers.BrowsableAPIRenderer, CSVRenderer]
    )
    def recipients(self, request, pk=None):
        """This blast's recipients: ?status=READ_ACK, ?stage=replied, ?clicked=true, ?q=; ?format=csv for a file."""
        blast = self.get_object()
        recipients = RecipientFilter(request.GET, queryset=blast.recipients.order_by("id"), request=request)
        if not recipients.is_valid():
            request.accepted_renderer, request.accepted_media_type = (
                renderers.JSONRenderer(),
                "application/json",
            )
            return Response(recipients.errors, status=status.HTTP_400_BAD_REQUEST)
        if request.accepted_renderer.format == "csv":
            filters = request.query_params.dict()
            filters.pop("format", None)
            recipients_exported(blast=blast, filters=filters, rows=recipients.qs.count(), by=_by(request))
            return recipients_csv_response(recipients.qs, f"blast-{blast.pk}-recipients.csv")
        page = self.paginate_queryset(recipients.qs)
        return self.get_paginated_response(RecipientSerializer(page, many=True).data)


class RecipientViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One recipient, its history, and marking it replied or closed."""

    queryset = BlastRecipient.objects.all()
    serializer_class = RecipientSerializer
    permission_classes = [ActionPermission]
    lookup_value_regex = ID

    @extend_schema(responses=HistorySerializer(many=True))
    @action(detail=True)
    def history(self, request, pk=None):
        """Every status change, oldest first, with its source and the payload behind it."""
        history = StatusHistory.objects.filter(recipient=self.get_object()).select_related("actor")
        return Response(HistorySerializer(history, many=True).data)

    @extend_schema(request=MarkSerializer, responses=RecipientSerializer)
    @action(detail=True, methods=["post"])
    def mark(self, request, pk=None):
        """Mark REPLIED or CLOSED (a sale) through the status ledger; never moves a status back."""
        recipient = self.get_object()
        serializer = MarkSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        recipient_mark(
            recipient=recipient, status=Status[data["status"]], by=_by(request), note=data["note"],
            deal_value=data["deal_value"],
        )  # fmt: skip
        recipient.refresh_from_db()
        return Response(RecipientSerializer(recipient).data)
