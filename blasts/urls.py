from django.urls import include, path, re_path
from rest_framework.routers import SimpleRouter

from .api import BlastViewSet
from .webhooks import wsapme_webhook


class OptionalSlashRouter(SimpleRouter):
    """The roadmap writes /api/blasts/1/send, Django style writes a final slash: take both."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("blasts", BlastViewSet, basename="blast")

urlpatterns = [
    re_path(r"^api/webhook/wsapme/?$", wsapme_webhook, name="wsapme-webhook"),
    path("api/webhook/wsapme/<str:token>", wsapme_webhook, name="wsapme-webhook-token"),
    path("api/", include(router.urls)),
]
