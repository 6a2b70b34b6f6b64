"""Outgoing webhooks: staging channel events, sending signed deliveries, signatures."""
