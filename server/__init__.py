"""The server: composition root and edges.

Top level: settings (``config``), the CLI, the ASGI app (``app``), the node's parts built from
settings (``assembly``) and run together (``runtime``), channel namespaces, metrics and logs.
Rooms: ``transport`` (Engine.IO and Socket.IO, the websocket protocol, per-connection output),
``socket`` (the Socket.IO edge: connections, requests, presence, delivery), ``api`` (HTTP),
``auth`` (tokens, API keys, revocations, authorization), ``admin`` (each node's part of the admin
API), ``webhooks`` (outgoing webhooks), ``demo`` (the demo pages and the simulated airport).
"""
