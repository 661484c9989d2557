"""Page cursors for keyset pagination: opaque and signed, so a client can pass one back but not
forge or edit one (a changed cursor is a 400 naming the field). One codec for every list."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from server.errors import BadRequest


class CursorCodec:
    """Encodes a list's position as `<base64 json>.<base64 mac>`, tagged with the list's kind."""

    def __init__(self, secret: str):
        self._key = hashlib.sha256(b"jobmon-cursor:" + secret.encode()).digest()

    def __repr__(self) -> str:
        return "CursorCodec(<secret>)"

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:12]

    def encode(self, kind: str, *parts: object) -> str:
        """A cursor of this kind of list holding `parts` (JSON values)."""
        body = json.dumps([kind, *parts], separators=(",", ":")).encode()
        return _b64(body) + "." + _b64(self._mac(body))

    def decode(self, raw: str, kind: str, types: tuple[type, ...] | None = None, field: str = "cursor") -> list:
        """The parts of a cursor of this kind (each of `types`, when given); 400 naming `field`
        when it is malformed, changed, or made for another list."""
        try:
            body_text, _, mac_text = raw.partition(".")
            body = _unb64(body_text)
            if not hmac.compare_digest(self._mac(body), _unb64(mac_text)):
                raise ValueError("bad signature")
            parts = json.loads(body)
            if not isinstance(parts, list) or not parts or parts[0] != kind:
                raise ValueError("wrong kind")
            parts = parts[1:]
            if types is not None and (len(parts) != len(types) or not all(
                    isinstance(part, t) and not isinstance(part, bool) for part, t in zip(parts, types))):
                raise ValueError("wrong shape")
            return parts
        except (ValueError, TypeError, UnicodeDecodeError):
            raise BadRequest(f"Malformed '{field}': pass back the next_cursor of a previous page of this "
                             "same list", code="validation_error", details={"field": field}) from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or len(text) > 2000:
        raise ValueError("empty")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
