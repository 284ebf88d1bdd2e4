"""This capability's page routes (`pages`, included at the site's root by blasts/urls.py) and its
API viewsets (`api`: (prefix, viewset, basename), registered on the API router)."""

from django.urls import path, re_path

from . import import_views, views
from .api import ContactViewSet

pages = [
    # The API's bulk import, a route of its own (the router's api/contacts/<id> takes digits only).
    re_path(
        r"^api/contacts/import/?$", import_views.ContactImportAPIView.as_view(), name="contact-import-api"
    ),
    path("contacts/import/", import_views.ContactImportView.as_view(), name="contact-import"),
    path("contacts/", views.ContactListView.as_view(), name="contact-list"),
    path("contacts/<int:pk>/", views.ContactDetailView.as_view(), name="contact-detail"),
    path("contacts/<int:pk>/edit/", views.ContactEditView.as_view(), name="contact-edit"),
]
api = [
    ("contacts", ContactViewSet, "contact"),
]
