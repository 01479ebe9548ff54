"""The WSGI application gunicorn serves."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "shared"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "user_service.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
