"""/api/contacts: the contact list with the page's filters, one contact with its timeline, and
creating or changing a contact (Viewer reads, Marketer writes: access "contact_edit")."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.permissions import SAFE_METHODS, IsAdminUser
from rest_framework.response import Response

from ..access import may, refusal
from ..api import ID, Pagination, _by
from ..models import Contact
from .book import contact_create, contact_edit
from .filters import ContactFilter
from .selectors import contact_opt_out, contact_timeline, contacts_with_facts
from .serializers import (
    ContactChangeSerializer,
    ContactCreateSerializer,
    ContactDetailSerializer,
    ContactSerializer,
)

EDIT = "contact_edit"


class ContactPermission(IsAdminUser):
    """Staff may read; creating or changing a contact needs contact_edit, else 403 naming it."""

    def has_permission(self, request, view):
        if not super().has_permission(request, view):
            return False
        if request.method not in SAFE_METHODS and not may(request.user, EDIT):
            self.message = refusal(EDIT)
            return False
        return True


class ContactViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Contacts, newest seen first: ?q= (a name, or a number in any format), ?tag=, ?attribute= with
    ?attribute_value= (and ?attribute_op=), ?history= with ?stage= and ?days= — the contact page's
    filters, each a segment rule. Opted-out contacts are listed too (`opted_out`)."""

    queryset = Contact.objects.all()
    serializer_class = ContactSerializer
    permission_classes = [ContactPermission]
    lookup_value_regex = ID
    pagination_class = Pagination
    filterset_class = ContactFilter
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return contacts_with_facts(Contact.objects.all())

    def filter_queryset(self, queryset):
        # The list's filters choose contacts; on one contact they would hide it.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    @extend_schema(
        parameters=[
            OpenApiParameter("days", int, description=ContactFilter.base_filters["days"].extra["help_text"])
        ]
    )
    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(contacts_with_facts(self.filter_queryset(Contact.objects.all())))
        return self.get_paginated_response(ContactSerializer(page, many=True).data)

    def _detail(self, contact: Contact, code=status.HTTP_200_OK) -> Response:
        contact.opt_out_entry = contact_opt_out(contact)
        rows = self.paginate_queryset(contact_timeline(contact))
        contact.timeline = {
            "count": self.paginator.page.paginator.count,
            "next": self.paginator.get_next_link(),
            "previous": self.paginator.get_previous_link(),
            "results": rows,
        }
        return Response(ContactDetailSerializer(contact).data, status=code)

    @extend_schema(responses=ContactDetailSerializer)
    def retrieve(self, request, *args, **kwargs):
        """The contact: attributes, tags, opt-out (with where it came from) and its timeline across
        every blast (sent, received, read, replied with the words, closed with the deal)."""
        return self._detail(self.get_object())

    @extend_schema(
        request=ContactCreateSerializer,
        responses={
            201: ContactDetailSerializer,
            400: OpenApiResponse(description="Field by field; a number that is a contact already."),
        },
    )
    def create(self, request, *args, **kwargs):
        """Add a contact. The number in any format is stored as E.164; a number that is a contact
        already is refused (400 on `phone`, naming its id), never merged: PATCH that one instead."""
        serializer = ContactCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            contact = contact_create(**serializer.validated_data, by=_by(request))
        except DjangoValidationError as exc:
            raise serializers.ValidationError(serializers.as_serializer_error(exc)) from None
        return self._detail(self.get_queryset().get(pk=contact.pk), status.HTTP_201_CREATED)

    @extend_schema(
        request=ContactChangeSerializer,
        responses={200: ContactDetailSerializer, 400: OpenApiResponse(description="Field by field.")},
    )
    def partial_update(self, request, *args, **kwargs):
        """Change the name, the attributes (replaced as a whole: a key left out is removed) or the tags
        (set to exactly these); fields not given stay. Audited."""
        contact = self.get_object()
        serializer = ContactChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        contact_edit(contact=contact, by=_by(request), **serializer.validated_data)
        return self._detail(self.get_queryset().get(pk=contact.pk))
