"""Layer 4: the HTTP API (aiohttp).

``app.build_app(Services)`` serves it. One routes module per OpenAPI tag
(``service``, ``cameras``, ``footage``, ``audit``, ``custody``, ``retention``,
``holds``), each with its ``ROUTES`` and ``SCHEMAS``; ``spec`` (the route and
parameter types, the one validation), ``shared`` (scope-enforcing lookups,
JSON answers), ``scope`` (what a camera-scoped token sees of a record about
several cameras), ``deps`` (the services, by application key), ``auth``,
``guard`` (failed authentication: limited and audited per address),
``problem`` (the one mapping of errors to HTTP), ``openapi``, ``metrics``.
"""
