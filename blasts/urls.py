from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from .api import BlastViewSet, RecipientViewSet
from .views import healthz
from .webhooks import wsapme_webhook


class OptionalSlashRouter(SimpleRouter):
    """The roadmap writes /api/blasts/1/send, Django style writes a final slash: take both."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("blasts", BlastViewSet, basename="blast")
router.register("recipients", RecipientViewSet, basename="recipient")

urlpatterns = [
    re_path(r"^api/webhook/wsapme/?$", wsapme_webhook, name="wsapme-webhook"),
    path("api/webhook/wsapme/<str:token>", wsapme_webhook, name="wsapme-webhook-token"),
    path("api/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("healthz", healthz, name="healthz"),
]
