from django.conf import settings

from .access import NEEDS, may


def gateway(request):
    """Tells every page whether messages go to the local sandbox instead of WhatsApp."""
    return {"wsapme_sandbox": settings.WSAPME_SANDBOX}


def access(request):
    """`may.send`, `may.export`, …: which actions (access.NEEDS) the signed-in user may take, so pages
    show only the buttons and links that will work."""
    user = getattr(request, "user", None)
    return {"may": {action: bool(user) and may(user, action) for action in NEEDS}}
