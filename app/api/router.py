"""Every route of the service, in matching order.

Each router carries its full path prefix (/api/v1/... for the API), so a matched route's
path is the complete template: that is the label request metrics and logs use. The app
takes these routes as its own instead of including the routers: every included router is
one more matching layer on every request (`make bench` measures what that costs on /live).
tests/unit/test_layers.py checks that the list stays flat.
"""

from starlette.routing import BaseRoute

from app.api.routes import auth, health, items, jobs, metrics, root, users

ROUTERS = (
    health.router,  # first: the probes are the most frequent requests
    metrics.router,
    auth.router,
    users.router,
    jobs.router,  # before items: /items/import, /items/export
    items.router,
    root.router,
)


def all_routes() -> list[BaseRoute]:
    return [route for router in ROUTERS for route in router.routes]
