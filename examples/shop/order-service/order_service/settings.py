"""Settings of the order-service: the shared defaults (ferry_shop.settings) for its one app."""
from ferry_shop.settings import common

globals().update(common("order_service", "orders"))
