"""Fast-tier fixtures live in tests/conftest.py, shared with the integration tier."""
