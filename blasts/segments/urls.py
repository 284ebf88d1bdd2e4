"""This capability's page routes (`pages`, included at the site's root by blasts/urls.py) and its
API viewsets (`api`: (prefix, viewset, basename), registered on the API router)."""

from django.urls import path

from . import views
from .api import SegmentViewSet

pages = [
    path("segments/", views.SegmentListView.as_view(), name="segment-list"),
    path("segments/new/", views.SegmentFormView.as_view(), name="segment-new"),
    path("segments/<int:pk>/", views.SegmentDetailView.as_view(), name="segment-detail"),
    path("segments/<int:pk>/edit/", views.SegmentFormView.as_view(), name="segment-edit"),
    path("segments/<int:pk>/blast/", views.SegmentBlastView.as_view(), name="segment-blast"),
    path("segments/<int:pk>/delete/", views.SegmentDeleteView.as_view(), name="segment-delete"),
]
api = [("segments", SegmentViewSet, "segment")]
