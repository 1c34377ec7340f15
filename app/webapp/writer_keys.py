"""The keys a write credential gives: one to find it, one to sign its sessions.

Kept apart from webapp.writers (which needs Flask) so webapp.config can derive them at
start without an import cycle; the credentials themselves are not kept.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import NamedTuple


class WriterKey(NamedTuple):
    lookup: bytes  # SHA-256 of the credential: finds it in constant time
    session: bytes  # signs the sessions made with it

    @classmethod
    def of(cls, credential: str) -> WriterKey:
        secret = credential.encode()
        return cls(
            hashlib.sha256(secret).digest(),
            hmac.new(secret, b"webapp-session-key-v1", hashlib.sha256).digest(),
        )
