"""/api/opt-outs: the list read by every staff login; adding, removing (with a reason) and the CSV
export need their permissions."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, renderers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from ..access import may, refusal
from ..api import ID, CSVRenderer, Pagination
from ..audit import Actor, Via
from ..models import OptOut
from .filters import OptOutFilter
from .serializers import OptOutCreateSerializer, OptOutRemoveSerializer, OptOutSerializer
from .services import opt_out_add, opt_out_remove, opt_outs_csv_response, opt_outs_exported


def _wants_csv(request) -> bool:
    return getattr(getattr(request, "accepted_renderer", None), "format", "") == "csv"


class OptOutPermission(IsAdminUser):
    """Staff may read; adding and removing need "opt_out", the CSV "opt_out_export" (access.NEEDS)."""

    def has_permission(self, request, view):
        if not super().has_permission(request, view):
            return False
        needs = {"create": "opt_out", "remove": "opt_out"}.get(view.action)
        if view.action == "list" and _wants_csv(request):
            needs = "opt_out_export"
        if needs and not may(request.user, needs):
            self.message = refusal(needs)
            return False
        return True


def _by(request) -> Actor:
    return Actor(request.user, Via.API)


ALREADY = OpenApiResponse(description="Field errors, e.g. the number is on the list already (since when).")


class OptOutViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Numbers that must not be messaged, newest first, with where each came from."""

    queryset = OptOut.objects.select_related("blast", "added_by")
    serializer_class = OptOutSerializer
    permission_classes = [OptOutPermission]
    lookup_value_regex = ID
    pagination_class = Pagination
    filterset_class = OptOutFilter

    def get_renderers(self):
        found = super().get_renderers()
        return [*found, CSVRenderer()] if self.action == "list" else found

    def filter_queryset(self, queryset):
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def handle_exception(self, exc):
        if _wants_csv(self.request):  # a refusal or a bad filter is said in JSON, not an empty file
            self.request.accepted_renderer = renderers.JSONRenderer()
            self.request.accepted_media_type = "application/json"
        return super().handle_exception(exc)

    @extend_schema(
        parameters=[
            OpenApiParameter("format", enum=["json", "csv"], description="csv: the whole filtered list as a "
                             "file (phone, added_at, source, reason, reply_text, blast_id, blast); needs the "
                             "permission to export phone numbers."),
        ],
    )  # fmt: skip
    def list(self, request, *args, **kwargs):
        """The list, newest first: ?q= searches numbers (any format), reasons and reply texts; ?source=."""
        opt_outs = self.filter_queryset(self.get_queryset())
        if _wants_csv(request):
            filters = {name: value for name, value in request.query_params.items() if name != "format"}
            opt_outs_exported(filters=filters, rows=opt_outs.count(), by=_by(request))
            return opt_outs_csv_response(opt_outs)
        page = self.paginate_queryset(opt_outs)
        return self.get_paginated_response(OptOutSerializer(page, many=True).data)

    def retrieve(self, request, *args, **kwargs):
        """One entry: the number, since when, where it came from (the STOP's text and blast) and why."""
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(request=OptOutCreateSerializer, responses={201: OptOutSerializer, 400: ALREADY})
    def create(self, request, *args, **kwargs):
        """Put a number on the list (as added by this login): every later blast skips it."""
        serializer = OptOutCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        opt_out = opt_out_add(phone=data["phone"], reason=data["reason"], by=_by(request))
        return Response(OptOutSerializer(opt_out).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=OptOutRemoveSerializer,
        responses={
            204: OpenApiResponse(description="Removed: blasts may message the number again."),
            400: OpenApiResponse(description="No reason given."),
        },
    )
    @action(detail=True, methods=["post"])
    def remove(self, request, pk=None):
        """Take the number off the list, saying why (`reason`, kept in the audit trail)."""
        opt_out = self.get_object()
        serializer = OptOutRemoveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        opt_out_remove(opt_out=opt_out, by=_by(request), reason=serializer.validated_data["reason"])
        return Response(status=status.HTTP_204_NO_CONTENT)
