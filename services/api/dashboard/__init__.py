"""/jobs: the operators' dashboard. Pages, the forms' actions, rendering (Jinja2 templates, static files)."""
