"""Comparison servers with Tandem's event contract."""
