"""Who may write: a bearer credential on the API, a signed-in browser on the page.

The credentials are read from WEBAPP_WRITERS_FILE, one per line (two while one is being
replaced by another); only keys derived from them stay in memory. Reads stay open.

A browser signs in once with a credential and gets a session cookie: the time it was
issued and an HMAC of that time under a session key derived from the credential (not its
plain digest, so a leaked lookup digest or deployment checksum forges nothing). Any worker
or replica checks it without shared state, it expires after SESSION_SECONDS, and removing
the credential from the file ends every session made with it.

Without WEBAPP_WRITERS_FILE anyone may write: for a service run by hand on a laptop. The
app_deploy role always sets it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from flask import Flask, current_app, request

from webapp.errors import APIError
from webapp.writer_keys import WriterKey

SESSION_COOKIE = "webapp_session"
SESSION_SECONDS = 8 * 3600
_EXTENSION = "webapp.writers"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# `[0-9]`, not `\d`: only ASCII digits, so int() never sees "²" or a 5000-digit number.
_SESSION_VALUE = re.compile(r"([0-9]{1,12})\.([0-9a-f]{64})")


class Writers:
    def __init__(self, keys: tuple[WriterKey, ...] | None) -> None:
        self._keys = keys

    @property
    def open(self) -> bool:
        return self._keys is None

    def _matching(self, presented: str) -> WriterKey | None:
        """The key of credential `presented`, if it is one; every credential is compared."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for known in self._keys or ():
            if hmac.compare_digest(digest, known.lookup):
                found = known
        return found

    def credential_ok(self, presented: str) -> bool:
        return self.open or self._matching(presented) is not None

    def session_for(self, presented: str, now: float | None = None) -> str | None:
        """A session cookie's value for a valid credential, else None."""
        known = self._matching(presented)
        if known is None:
            return None
        issued = str(int(time.time() if now is None else now))
        return f"{issued}.{_mac(known.session, issued)}"

    def session_ok(self, cookie: str, now: float | None = None) -> bool:
        if self.open:
            return True
        parsed = _SESSION_VALUE.fullmatch(cookie)
        if parsed is None:
            return False
        issued, mac = parsed.groups()
        age = (time.time() if now is None else now) - int(issued)
        if not -60 <= age <= SESSION_SECONDS:
            return False
        found = False
        for known in self._keys or ():
            found |= hmac.compare_digest(_mac(known.session, issued).encode(), mac.encode())
        return found


def _mac(key: bytes, issued: str) -> str:
    return hmac.new(key, f"webapp-session:{issued}".encode(), hashlib.sha256).hexdigest()


def current() -> Writers:
    return current_app.extensions[_EXTENSION]


def require_bearer() -> None:
    """Before an API request: writes need `Authorization: Bearer <credential>`."""
    writers = current()
    if request.method in _SAFE_METHODS or writers.open:
        return
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise APIError(
            401,
            "unauthorized",
            "writes need an Authorization: Bearer <credential> header",
            {"WWW-Authenticate": 'Bearer realm="webapp"'},
        )
    if not writers.credential_ok(presented.strip()):
        raise APIError(
            401,
            "unauthorized",
            "the credential is not valid",
            {"WWW-Authenticate": 'Bearer realm="webapp", error="invalid_token"'},
        )


def init_app(app: Flask, keys: tuple[WriterKey, ...] | None) -> None:
    app.extensions[_EXTENSION] = Writers(keys)
    if keys is None:
        app.logger.warning("WEBAPP_WRITERS_FILE is not set: anyone may write")
