"""The webhook figure's floors, served by the bench's gunicorn only (never by the product's URLconf):
a bare Django view behind all the middleware, and a view that stores one row as the webhook does
(one INSERT). What the webhook costs above them is the webhook's own code.

gunicorn runs with DJANGO_SETTINGS_MODULE=bench.floor_settings (the product's settings with this
module as the URLconf): the product's URLs, and these two after them.
"""

from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from blastsite.urls import urlpatterns as product


@csrf_exempt
@require_POST
def bare(request):
    """Nothing but Django: the request through every middleware, a 200."""
    return HttpResponse(b'{"ok": true}', content_type="application/json")


@csrf_exempt
@require_POST
def one_insert(request):
    """Django and one INSERT of the raw body, as the webhook stores an event before it answers."""
    from blasts.models import WebhookEvent

    WebhookEvent.objects.create(body={"raw": request.body.decode()}, kind="unknown", state="review")
    return HttpResponse(b'{"received": 1}', content_type="application/json")


urlpatterns = [*product, path("bench/floor/bare", bare), path("bench/floor/insert", one_insert)]
