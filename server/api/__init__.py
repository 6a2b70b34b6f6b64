"""The HTTP API: FastAPI routers, the workers' fast lane in front of them, and their guards."""
