"""Development authentication manager: a local stand-in for the platform's AuthManager.

Why: services validate session tokens against the platform's SOAP
authentication manager; on a developer machine or in CI this package provides
a wire-compatible one (see devauth.service) with users from a JSON file
(devauth.users) and tokens shared by all gunicorn workers (devauth.tokens).
Run it with ``python -m devauth serve --demo``.
"""
