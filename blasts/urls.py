from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from . import actions, views
from .api import BlastViewSet, RecipientViewSet
from .contacts import urls as contacts
from .opt_outs import urls as opt_outs
from .segments import urls as segments
from .webhooks import wsapme_webhook


class OptionalSlashRouter(SimpleRouter):
    """The roadmap writes /api/blasts/1/send, Django style writes a final slash: take both."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("blasts", BlastViewSet, basename="blast")
router.register("recipients", RecipientViewSet, basename="recipient")
for prefix, viewset, basename in (*contacts.api, *segments.api, *opt_outs.api):
    router.register(prefix, viewset, basename=basename)

urlpatterns = [
    re_path(r"^api/webhook/wsapme/?$", wsapme_webhook, name="wsapme-webhook"),
    path("api/webhook/wsapme/<str:token>", wsapme_webhook, name="wsapme-webhook-token"),
    path("api/", include((router.urls, "api"))),  # api:blast-list, apart from the pages' blast-list
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("healthz", views.healthz, name="healthz"),
    # The pages' own sign-in (the admin's lives at its secret path). The admin's form: staff only,
    # as every page is, and the same message for a wrong password as for a non-staff account.
    path("login/", auth_views.LoginView.as_view(authentication_form=AdminAuthenticationForm), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.BlastListView.as_view(), name="blast-list"),
    path("overview/", views.OverviewView.as_view(), name="overview"),
    path("blasts/new/", actions.BlastCreatePageView.as_view(), name="blast-new"),
    path("blasts/<int:pk>/", views.BlastDetailView.as_view(), name="blast-detail"),
    path("blasts/<int:pk>/live/", views.BlastLiveView.as_view(), name="blast-live"),
    path(
        "blasts/<int:pk>/recipients.csv",
        actions.BlastRecipientsCsvView.as_view(),
        name="blast-recipients-csv",
    ),
    path("blasts/<int:pk>/actions/<str:name>/", actions.BlastActionView.as_view(), name="blast-action"),
    path("blasts/<int:pk>/follow-up/", actions.FollowUpCreateView.as_view(), name="blast-follow-up"),
    path("blasts/<int:pk>/sequence/", views.BlastSequenceView.as_view(), name="blast-sequence"),
    path("compare/", views.CompareView.as_view(), name="compare"),
    path("status/", views.StatusView.as_view(), name="status"),
    path(
        "blasts/<int:blast_pk>/recipients/<int:pk>/",
        views.RecipientDetailView.as_view(),
        name="recipient-detail",
    ),
    path(
        "blasts/<int:blast_pk>/recipients/<int:pk>/mark/",
        actions.RecipientMarkView.as_view(),
        name="recipient-mark",
    ),
    path(
        "blasts/<int:blast_pk>/recipients/<int:pk>/match/",
        actions.RecipientMatchView.as_view(),
        name="recipient-match",
    ),
    *contacts.pages,
    *segments.pages,
    *opt_outs.pages,
]
