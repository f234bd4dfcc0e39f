"""Diswoot: a durable bridge between Discord direct messages and Chatwoot."""

__version__ = "0.1.0"
