from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from blasts import urls as blasts_urls

urlpatterns = [
    path(settings.ADMIN_PATH, admin.site.urls),
    path("", include(blasts_urls)),
]
