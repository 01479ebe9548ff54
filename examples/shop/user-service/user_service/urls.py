from django.urls import path

from users import views

urlpatterns = [
    path("users", views.users),
    path("users/<uuid:user_id>", views.user),
    path("healthz", views.healthz),
]
