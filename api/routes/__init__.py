"""Route groups of the API, one module each.

Each router carries its whole prefix, so a route's template (its metrics label) is the full
path, e.g. /api/v1/orders/{order_id}.
"""

API_V1 = "/api/v1"
