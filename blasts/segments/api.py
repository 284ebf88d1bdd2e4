"""/api/segments: saved audiences (CRUD), their live count and members, a blast made from one, and a
preview of rules not saved."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from ..access import may, refusal
from ..api import ID, ActionPermission, Pagination, _by
from ..models import Segment
from ..serializers import BlastCreatedSerializer
from .rules import segment_members
from .selectors import members_with_tags, segment_sample
from .serializers import (
    CountSerializer,
    MemberSerializer,
    PreviewSerializer,
    SegmentBlastSerializer,
    SegmentPreviewSerializer,
    SegmentSerializer,
    as_400,
)
from .services import blast_create_from_segment, segment_delete

# The viewset's actions that change something, and the access.NEEDS action each needs.
NEEDED = {
    "create": "segment_edit",
    "update": "segment_edit",
    "partial_update": "segment_edit",
    "destroy": "segment_delete",
    "blast": "create",
}


class SegmentPermission(ActionPermission):
    """Staff read (a preview is a read too); saving, deleting and making a blast need their permission."""

    def has_permission(self, request, view):
        if not IsAdminUser.has_permission(self, request, view):
            return False
        needed = NEEDED.get(view.action)
        if needed and not may(request.user, needed):
            self.message = refusal(needed)
            return False
        return True


class SegmentViewSet(viewsets.ModelViewSet):
    """Segments: rules over contacts, combined with AND (match=all) or OR (match=any)."""

    queryset = Segment.objects.select_related("created_by").order_by("name", "id")
    serializer_class = SegmentSerializer
    permission_classes = [SegmentPermission]
    lookup_value_regex = ID
    pagination_class = Pagination

    def perform_destroy(self, segment):
        segment_delete(segment=segment, by=_by(self.request))

    @extend_schema(responses=CountSerializer, filters=False)
    @action(detail=True, pagination_class=None, filter_backends=[])
    def count(self, request, pk=None):
        """How many contacts the segment has now: one query."""
        segment = self.get_object()
        return Response({"count": segment_members(segment.match, segment.rules).count()})

    @extend_schema(
        responses=MemberSerializer(many=True),
        filters=False,
        parameters=[OpenApiParameter("page", int), OpenApiParameter("page_size", int)],
    )
    @action(detail=True, filter_backends=[])
    def members(self, request, pk=None):
        """The segment's members now, by id (?page=, ?page_size= up to 500), with tags and attributes."""
        segment = self.get_object()
        page = self.paginate_queryset(
            members_with_tags(segment_members(segment.match, segment.rules).order_by("pk"))
        )
        return self.get_paginated_response(MemberSerializer(page, many=True).data)

    @extend_schema(
        request=SegmentBlastSerializer,
        responses={
            201: BlastCreatedSerializer,
            400: OpenApiResponse(description="No member now, or a placeholder no member has."),
        },
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def blast(self, request, pk=None):
        """A draft blast to the members now (a snapshot: later changes to the segment do not change it).
        Opt-outs and the frequency cap are checked again before each send. Send it with /api/blasts/{id}/send."""
        segment = self.get_object()
        serializer = SegmentBlastSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            created = blast_create_from_segment(segment=segment, **serializer.validated_data, by=_by(request))
        except DjangoValidationError as exc:
            raise as_400(exc) from None
        return Response(BlastCreatedSerializer(created).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=SegmentPreviewSerializer, responses=PreviewSerializer, filters=False)
    @action(detail=False, methods=["post"], pagination_class=None, filter_backends=[])
    def preview(self, request):
        """The count and a sample of the contacts some rules choose, without saving a segment."""
        serializer = SegmentPreviewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        match, rules = serializer.validated_data["match"], serializer.validated_data["rules"]
        count = segment_members(match, rules).count()
        sample = segment_sample(match, rules, count)
        return Response({"count": count, "sample": MemberSerializer(sample, many=True).data})
