"""The HTTP layer: routes, their dependencies, error mapping."""

# The version prefix of every API route: one place to change it.
API_PREFIX = "/api/v1"
