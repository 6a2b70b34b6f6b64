"""Channels, brokers, history and recovery: moves publications on named channels.

This package knows neither Socket.IO nor the domain. The server wires it to both.
"""
