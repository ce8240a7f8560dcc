"""Tickets service: issue tickets and check them at the gate, with Redis as the shared state."""

__version__ = "1.0.0"
SERVICE_NAME = "tickets"
