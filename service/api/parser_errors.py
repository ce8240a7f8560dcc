"""The HTTP layer below the application: aiohttp's own answers to requests its parser
refuses (an unknown method token, a raw non-ASCII byte in the path, too many headers, a line
too long, HTTP/1.0 without Host) are problem+json like every other answer, never text/plain
with the request line echoed back, and a client's bad request never logs a traceback.

aiohttp builds those answers in RequestHandler.handle_error and offers no hook to replace it
(the class is fixed inside web.Server), so `install()` replaces that one method, once."""

from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import web, web_protocol
from aiohttp.web_request import BaseRequest

from .. import SERVER_HEADER
from .problems import PROBLEM_CONTENT_TYPE, problem_body

log = logging.getLogger(__name__)

_DETAILS = {
    400: "the request is not valid HTTP",
    413: "the request is too large",
    431: "the request's header fields are too large",
    500: "an unexpected error",
    504: "the request took too long",
}


def handle_error(
    self: web_protocol.RequestHandler,
    request: BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """Answer a request the server could not hand to the application, and close."""
    if status >= 500:
        self.log_exception("error handling request from %s", request.remote, exc_info=exc)
    else:
        # A client's fault: one quiet line, so that a flood of bad requests floods nothing.
        log.debug("refused a malformed request from %s: %s", request.remote, type(exc).__name__)
    if request.writer.output_size > 0:
        raise ConnectionError("the response was already started; cannot send an error")
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    slug = phrase.lower().replace(" ", "-")
    detail = _DETAILS.get(status, phrase)
    resp = web.Response(
        status=status, body=problem_body(status, slug, phrase, detail),
        content_type=PROBLEM_CONTENT_TYPE, headers={"Server": SERVER_HEADER},
    )
    resp.force_close()
    return resp


def install() -> None:
    web_protocol.RequestHandler.handle_error = handle_error  # type: ignore[method-assign]
