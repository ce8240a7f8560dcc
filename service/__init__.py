"""Tickets service: issue tickets and check them at the gate, with Redis as the shared state."""

__version__ = "1.0.0"
SERVICE_NAME = "tickets"
# Every answer's Server header, the API's and the processor's alike, instead of aiohttp's
# "Python/3.x aiohttp/3.y": versions help only an attacker.
SERVER_HEADER = SERVICE_NAME
