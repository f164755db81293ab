"""The JSON API and the probes, one module per resource: each has an ApiRoutes table that app.py mounts."""
