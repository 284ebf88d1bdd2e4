from django.conf import settings


def gateway(request):
    """Tells every page whether messages go to the local sandbox instead of WhatsApp."""
    return {"wsapme_sandbox": settings.WSAPME_SANDBOX}
