"""This capability's page routes (`pages`, included at the site's root by blasts/urls.py) and its
API viewsets (`api`: (prefix, viewset, basename), registered on the API router)."""

from django.urls import path

from . import views
from .api import OptOutViewSet

pages = [
    path("opt-outs/", views.OptOutListView.as_view(), name="opt-out-list"),
    path("opt-outs/import/", views.OptOutImportView.as_view(), name="opt-out-import"),
    path("opt-outs/export.csv", views.OptOutExportView.as_view(), name="opt-out-export"),
    path("opt-outs/<int:pk>/remove/", views.OptOutRemoveView.as_view(), name="opt-out-remove"),
]
api = [("opt-outs", OptOutViewSet, "opt-out")]
