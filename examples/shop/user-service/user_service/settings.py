"""Settings of the user-service: the shared defaults (ferry_shop.settings) for its one app."""
from ferry_shop.settings import common

globals().update(common("user_service", "users"))
