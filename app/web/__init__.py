"""The web UI: server-rendered pages under WEBUI_BASE_URL's path (/ui by default), and the
self-hosted API documentation at /docs. It sits on top of the API layer and uses the same
services; the browser signs in with a session cookie instead of a bearer token."""
