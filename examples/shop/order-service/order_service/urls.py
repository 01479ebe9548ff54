from django.urls import path

from orders import views

urlpatterns = [
    path("orders", views.orders),
    path("users", views.known_users),
    # Ferry's worker delivers users.v1 here (EventConsumer order-service-users).
    path("events/users", views.user_events),
    path("healthz", views.healthz),
]
