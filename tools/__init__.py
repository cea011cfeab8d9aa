"""Development tools that are not part of the service (the runtime image does not carry them)."""
