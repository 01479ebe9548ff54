from django.apps import AppConfig


class Config(AppConfig):
    name = "users"
    default_auto_field = "django.db.models.BigAutoField"
