"""HTTP API: aiohttp handlers, one module per resource, described by ``/openapi.json``."""
