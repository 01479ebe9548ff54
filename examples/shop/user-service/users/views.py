"""HTTP API of the user-service: POST /users creates a user (and its event), GET reads."""

import json

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from .models import User
from .services import create_user_and_enqueue


def _json(user: User) -> dict:
    return {"id": str(user.id), "email": user.email, "name": user.name}


@csrf_exempt
@require_http_methods(["GET", "POST"])
def users(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"users": [_json(u) for u in User.objects.order_by("created_at")]})
    try:
        body = json.loads(request.body or b"{}")
        email, name = str(body["email"]), str(body["name"])
        validate_email(email)
    except (ValueError, KeyError, TypeError, ValidationError) as e:
        return JsonResponse({"error": f"expected {{email, name}}: {e}"}, status=400)
    try:
        user = create_user_and_enqueue(email=email, name=name)
    except IntegrityError:
        return JsonResponse({"error": f"a user with email {email} exists"}, status=409)
    return JsonResponse(_json(user), status=201)


@require_GET
def user(request: HttpRequest, user_id) -> JsonResponse:
    found = User.objects.filter(id=user_id).first()
    if found is None:
        return JsonResponse({"error": "no such user"}, status=404)
    return JsonResponse(_json(found))


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})
