from django.apps import AppConfig


class BlastsConfig(AppConfig):
    name = "blasts"
    verbose_name = "WhatsApp blasts"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
