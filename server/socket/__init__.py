"""The Socket.IO edge: connections, requests, presence and delivery to this node's subscribers."""
