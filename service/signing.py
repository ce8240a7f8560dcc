"""Signed ticket tokens: what a ticket's QR code carries, so that a gate can check a ticket
with no network at all.

A token is `TK` and the RFC 4648 base32 (upper case, no padding) of

    header   1 byte   version (high nibble, 1) and flags: 1 valid_from, 2 valid_until, 4 type
    kid      2 bytes  the first two bytes of SHA-256 of the signing key's raw public key
    id      16 bytes  the ticket's UUID; an event's tickets carry the event id in it
    from     5 bytes  valid_from, whole seconds (when flag 1)
    until    5 bytes  valid_until, whole seconds, rounded up (when flag 2)
    type     1 + n    length and ASCII of the ticket type (when flag 4)
    sig     64 bytes  Ed25519 over DOMAIN + every byte above

Base32's alphabet is inside the QR code's alphanumeric mode (5.5 bits a character) and is
what a keyboard-wedge scanner types without a keyboard layout getting in the way. The gate
page (web/gate/token.js) reads the same layout.

Keys are Ed25519 in PEM (`openssl genpkey -algorithm ed25519`). The last private key of
TICKET_SIGNING_KEYS signs; every key in it (private or `PUBLIC KEY`) verifies, so rotating is
appending a new key, and retiring one is removing it once its tickets are past."""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .models import Refusal, Ticket, event_of

TOKEN_PREFIX = "TK"
DOMAIN = b"tickets-token-v1\x00"
_VERSION = 1
_HAS_FROM, _HAS_UNTIL, _HAS_TYPE = 1, 2, 4
_SIG_BYTES = 64
_MIN_BYTES = 1 + 2 + 16 + _SIG_BYTES
# Big-endian seconds: 40 bits reach far past the API's bound on times (2**33).
_TIME_BYTES = 5
# The longest token: both windows and a 32-character type.
MAX_TOKEN_CHARS = len(TOKEN_PREFIX) + math.ceil((_MIN_BYTES + 2 * _TIME_BYTES + 1 + 32) * 8 / 5)
_TOKEN_RE = re.compile(rf"^{TOKEN_PREFIX}[A-Z2-7]{{{math.ceil(_MIN_BYTES * 8 / 5)},{MAX_TOKEN_CHARS}}}$")
_PEM_RE = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.S)


class TokenRefused(Exception):
    """A token that does not verify; its reason is a gate's refusal code (Refusal)."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.message)
        self.reason = reason


def looks_like_token(text: str) -> bool:
    """A token rather than a bare id (which is a lower-case UUID): the cheap test, before any
    decoding."""
    return text.startswith(TOKEN_PREFIX)


def token_ticket_id(token: str) -> str | None:
    """The ticket id a token names, read without verifying it (None for no token): to know
    which event a request touches before the handler verifies the token."""
    try:
        return str(uuid.UUID(bytes=_decode(token)[3:19]))
    except TokenRefused:
        return None


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says."""

    ticket_id: str
    kid: str
    type: str | None
    valid_from: int | None
    valid_until: int | None

    @property
    def event(self) -> str:
        return event_of(self.ticket_id)


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    public: Ed25519PublicKey
    private: Ed25519PrivateKey | None

    @property
    def public_raw(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _kid(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:2].hex()


def _load_pem(block: str) -> SigningKey:
    data = block.encode()
    if "PUBLIC KEY" in block.split("\n", 1)[0]:
        public = serialization.load_pem_public_key(data)
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError("TICKET_SIGNING_KEYS: only Ed25519 keys are taken")
        return SigningKey(_kid(public), public, None)
    private = serialization.load_pem_private_key(data, password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError("TICKET_SIGNING_KEYS: only Ed25519 keys are taken")
    return SigningKey(_kid(private.public_key()), private.public_key(), private)


@dataclass(frozen=True, slots=True)
class TicketSigner:
    """The service's signing keys. With none configured, tickets are not signed: the token
    routes answer 503 `signing-off`, and a token presented anywhere is an unknown key."""

    keys: tuple[SigningKey, ...] = ()

    @classmethod
    def parse(cls, pem_text: str) -> TicketSigner:
        keys = tuple(_load_pem(m.group(0)) for m in _PEM_RE.finditer(pem_text))
        if pem_text.strip() and not keys:
            raise ValueError("TICKET_SIGNING_KEYS holds no PEM key")
        kids = [k.kid for k in keys]
        if len(set(kids)) != len(kids):
            raise ValueError("TICKET_SIGNING_KEYS: two keys share a key id (or one key is there twice); "
                             "generate the newer one again")
        return cls(keys)

    @staticmethod
    def generate_pem() -> str:
        key = Ed25519PrivateKey.generate()
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    @property
    def signing_key(self) -> SigningKey | None:
        return next((k for k in reversed(self.keys) if k.private is not None), None)

    def sign(self, ticket: Ticket) -> str:
        key = self.signing_key
        if key is None or key.private is None:
            raise LookupError("no signing key")
        body = _pack(key.kid, ticket)
        signature = key.private.sign(DOMAIN + body)
        return TOKEN_PREFIX + base64.b32encode(body + signature).decode().rstrip("=")

    def verify(self, token: str) -> Claims:
        raw = _decode(token)
        kid = raw[1:3].hex()
        key = next((k for k in self.keys if k.kid == kid), None)
        if key is None:
            raise TokenRefused(Refusal.UNKNOWN_KEY)
        body, signature = raw[:-_SIG_BYTES], raw[-_SIG_BYTES:]
        try:
            key.public.verify(signature, DOMAIN + body)
        except InvalidSignature:
            raise TokenRefused(Refusal.BAD_SIGNATURE) from None
        return _unpack(kid, body)

    def jwks(self) -> dict[str, object]:
        """The public keys as a JSON Web Key Set (RFC 7517, Ed25519 as RFC 8037's OKP)."""
        signing = self.signing_key
        return {"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": k.kid, "use": "sig", "alg": "EdDSA",
             "x": base64.urlsafe_b64encode(k.public_raw).decode().rstrip("="),
             "signing": k is signing}
            for k in self.keys
        ]}


def _pack(kid: str, ticket: Ticket) -> bytes:
    flags, tail = 0, b""
    if ticket.valid_from is not None:
        flags |= _HAS_FROM
        tail += math.floor(ticket.valid_from).to_bytes(_TIME_BYTES, "big")
    if ticket.valid_until is not None:
        flags |= _HAS_UNTIL
        tail += math.ceil(ticket.valid_until).to_bytes(_TIME_BYTES, "big")
    if ticket.type is not None:
        flags |= _HAS_TYPE
        name = ticket.type.encode("ascii")
        tail += bytes([len(name)]) + name
    return bytes([_VERSION << 4 | flags]) + bytes.fromhex(kid) + uuid.UUID(ticket.id).bytes + tail


def _decode(token: str) -> bytes:
    if not _TOKEN_RE.fullmatch(token):
        raise TokenRefused(Refusal.MALFORMED_TOKEN)
    text = token[len(TOKEN_PREFIX):]
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except binascii.Error:
        raise TokenRefused(Refusal.MALFORMED_TOKEN) from None
    # Base32's last character can carry unused bits: one token, one spelling.
    if base64.b32encode(raw).decode().rstrip("=") != text:
        raise TokenRefused(Refusal.MALFORMED_TOKEN)
    if len(raw) < _MIN_BYTES or raw[0] >> 4 != _VERSION or raw[0] & ~0x7 & 0xF:
        raise TokenRefused(Refusal.MALFORMED_TOKEN)
    return raw


def _unpack(kid: str, body: bytes) -> Claims:
    """The signed fields; the signature is good, so a layout error is a key's owner signing
    nonsense, and is refused as malformed all the same."""
    flags, at = body[0] & 0xF, 19
    ticket_id = str(uuid.UUID(bytes=body[3:19]))
    valid_from = valid_until = None
    type_name = None
    try:
        if flags & _HAS_FROM:
            valid_from, at = _seconds(body, at), at + _TIME_BYTES
        if flags & _HAS_UNTIL:
            valid_until, at = _seconds(body, at), at + _TIME_BYTES
        if flags & _HAS_TYPE:
            size = body[at]
            type_name, at = body[at + 1:at + 1 + size].decode("ascii"), at + 1 + size
    except (IndexError, UnicodeDecodeError):
        raise TokenRefused(Refusal.MALFORMED_TOKEN) from None
    if at != len(body):
        raise TokenRefused(Refusal.MALFORMED_TOKEN)
    return Claims(ticket_id, kid, type_name, valid_from, valid_until)


def _seconds(body: bytes, at: int) -> int:
    if at + _TIME_BYTES > len(body):
        raise IndexError("a time past the end")
    return int.from_bytes(body[at:at + _TIME_BYTES], "big")
