from django.urls import include, path, re_path
from rest_framework.routers import SimpleRouter

from .api import BlastViewSet
from .webhooks import wsapme_webhook

router = SimpleRouter(trailing_slash="/?")
router.register("blasts", BlastViewSet, basename="blast")

urlpatterns = [
    re_path(r"^api/webhook/wsapme/?$", wsapme_webhook, name="wsapme-webhook"),
    path("api/webhook/wsapme/<str:token>", wsapme_webhook, name="wsapme-webhook-token"),
    path("api/", include(router.urls)),
]
