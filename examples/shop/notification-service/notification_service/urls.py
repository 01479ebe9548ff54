from django.urls import path

from notifications import views

urlpatterns = [
    # Ferry's worker delivers orders.v1 here (EventConsumer notification-service-orders).
    path("events/orders", views.order_events),
    path("notifications", views.notifications),
    path("healthz", views.healthz),
]
