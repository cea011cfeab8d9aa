"""The HTTP layer: routes, their dependencies, error mapping."""

# The version prefix of every API route: one place to change it.
API_PREFIX = "/api/v1"
# The API document (the root page names it; /docs and the web UI load it).
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
# The import upload's route: the body limit of its path is the upload's own (app/main.py).
IMPORT_PATH = f"{API_PREFIX}/items/import"
# Room for the multipart framing and the form's other fields around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
