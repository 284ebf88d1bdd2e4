from django.apps import AppConfig


class BlastsConfig(AppConfig):
    name = "blasts"
    verbose_name = "WhatsApp blasts"
