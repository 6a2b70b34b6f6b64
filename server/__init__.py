"""Composition root: settings, CLI, the ASGI app, Socket.IO handlers and the HTTP API."""
