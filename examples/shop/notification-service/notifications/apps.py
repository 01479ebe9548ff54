from django.apps import AppConfig


class Config(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"
