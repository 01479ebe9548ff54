#!/usr/bin/env python3
"""Django's command-line utility for the user-service (runserver, migrate, test)."""
import os
import sys
from pathlib import Path

# The shared package sits beside the services (examples/shop/shared; /app/shared in the image).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shared"))

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "user_service.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
