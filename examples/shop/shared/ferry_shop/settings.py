"""Django settings every service shares, 12-factor style: everything from the environment.

DATABASE_URL is the service's own PostgreSQL database (services never share one); the same
Secret feeds the injected outbox relay (annotation ferry.dev/outbox-database-secret).
"""

import os
from urllib.parse import unquote, urlparse


def database_from_url(url: str, test_name: str | None = None) -> dict:
    """Django's DATABASES entry for a postgresql:// URL."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be postgresql://..., not {parsed.scheme}://")
    entry = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        # One transaction per request: the domain row and its outbox row commit together.
        "ATOMIC_REQUESTS": True,
        "CONN_MAX_AGE": 60,
    }
    if test_name:
        entry["TEST"] = {"NAME": test_name}
    return entry


def common(service: str, app: str) -> dict:
    """The settings of one service: its app, its database, JSON logs to stderr."""
    return {
        "SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-secret"),
        "DEBUG": os.environ.get("DJANGO_DEBUG", "false").lower() == "true",
        "ALLOWED_HOSTS": os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(","),
        "INSTALLED_APPS": ["django.contrib.contenttypes", app],
        "MIDDLEWARE": ["django.middleware.common.CommonMiddleware"],
        "ROOT_URLCONF": f"{service}.urls",
        "WSGI_APPLICATION": f"{service}.wsgi.application",
        "DATABASES": {
            "default": database_from_url(
                os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                # Tests create their own database; a name per run lets runs share a server.
                os.environ.get("SHOP_TEST_DATABASE"),
            )
        },
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["stderr"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        },
    }
