"""/healthz, /readyz and /metrics: a placeholder until the work that adds them replaces this file."""

routes: list = []  # Starlette routes; console.app mounts whatever is here
