"""What a ticket shows at the gate: its signed token, the QR code of it (segno, pinned in
requirements.txt: a maintained, dependency-free encoder that picks the smallest symbol and
writes SVG and PNG itself), and the public keys a gate verifies tokens with offline."""

from __future__ import annotations

import io
import json

import segno
from aiohttp import web

from ..api_keys import Permission
from ..errors import SigningOff, TicketRevoked
from ..models import Ticket, TicketState, event_of
from . import inputs
from .appkeys import SETTINGS, TICKETS
from .auth import requires, ticket_event_in_path
from .budget import PNG_COST, SVG_COST, TOKEN_COST, fixed

# M: 15% of the symbol can be lost (a crease, a glare) and it still reads; segno raises it
# to Q or H when that fits in the same version.
QR_ERROR = "m"
# Pixels a module in the PNG; the SVG scales by itself.
PNG_SCALE = 8
QR_BORDER = 4
_NO_STORE = {"Cache-Control": "no-store"}


def qr_of(token: str) -> segno.QRCode:
    return segno.make_qr(token, error=QR_ERROR, boost_error=True)


async def _signed(request: web.Request) -> tuple[Ticket, str, str]:
    """The ticket, its token, and the id of the key that signed it."""
    signer = request.app[SETTINGS].signer
    key = signer.signing_key
    if key is None:
        raise SigningOff()
    ticket = await request.app[TICKETS].get(inputs.ticket_id(request, request.match_info["id"]))
    if ticket.state is TicketState.REVOKED:  # it would be refused at every gate
        raise TicketRevoked(ticket.id)
    return ticket, signer.sign(ticket), key.kid


async def public_keys(request: web.Request) -> web.Response:
    """The keys that verify ticket tokens, public: a gate caches them for offline checks."""
    inputs.reject_unknown_params(request, ())
    body = json.dumps(request.app[SETTINGS].signer.jwks()).encode()
    return web.Response(body=body, content_type="application/json",
                        headers={"Cache-Control": "public, max-age=300"})


@requires(Permission.PRINT, scope=ticket_event_in_path, cost=fixed(TOKEN_COST))
async def ticket_token(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    ticket, token, kid = await _signed(request)
    qr = qr_of(token)
    body = {"ticket": ticket.id, "event": event_of(ticket.id), "token": token, "kid": kid,
            "qr": {"version": qr.version, "error": qr.error, "modules": qr.symbol_size(border=0)[0]}}
    return web.Response(body=json.dumps(body).encode(), content_type="application/json", headers=_NO_STORE)


@requires(Permission.PRINT, scope=ticket_event_in_path, cost=fixed(SVG_COST))
async def ticket_qr_svg(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    ticket, token, _ = await _signed(request)
    out = io.BytesIO()
    qr_of(token).save(out, kind="svg", scale=1, border=QR_BORDER, xmldecl=False, title=f"Ticket {ticket.id}",
                      unit="mm", svgclass="ticket-qr")
    return web.Response(body=out.getvalue(), content_type="image/svg+xml", headers=_NO_STORE)


@requires(Permission.PRINT, scope=ticket_event_in_path, cost=fixed(PNG_COST))
async def ticket_qr_png(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    _, token, _ = await _signed(request)
    out = io.BytesIO()
    qr_of(token).save(out, kind="png", scale=PNG_SCALE, border=QR_BORDER)
    return web.Response(body=out.getvalue(), content_type="image/png", headers=_NO_STORE)
