"""API keys for ``tierflow serve``.

| ``TIERFLOW_API_KEYS`` | meaning |
| --- | --- |
| unset or blank | no authentication; listen on loopback only (:func:`check_bind`) |
| ``k1,k2`` | these keys (spaces around each dropped, empty items ignored) |
| ``@/path/file`` | one key a line, blank lines ignored |

A key file that cannot be read, or holds no key, is a ``ConfigError``: a mistake in the
setting never turns authentication off.

Each request then carries ``x-api-key``. :func:`require_key` (a FastAPI dependency) answers
401 with a one-line JSON error when the header is missing or wrong, and otherwise returns
the caller's *key id*: a short, stable hash of the key, never the key itself, which the
server stores as the owner of what the caller creates. The comparison is constant-time:
the presented key's digest is compared with every configured key's digest, with no early
exit, so neither a key's prefix nor its length shows in the timing.

The app holds the accepted keys in ``app.state``, set once at start::

    app = FastAPI()
    use_api_keys(app, load_api_keys())

    @app.get("/threads/{thread_id}")
    async def get_thread(thread_id: str, owner: str | None = Depends(require_key)): ...
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request

from tierflow.errors import ConfigError, UserError

ENV_VAR = "TIERFLOW_API_KEYS"
HEADER = "x-api-key"
_STATE_ATTR = "tierflow_api_keys"
_ID_DOMAIN = b"tierflow api key id\x00"


def load_api_keys(env: Mapping[str, str] = os.environ) -> frozenset[str] | None:
    """The keys ``TIERFLOW_API_KEYS`` configures, or ``None`` when it is unset or blank."""
    raw = (env.get(ENV_VAR) or "").strip()
    if not raw:
        return None
    if raw.startswith("@"):
        path = Path(raw[1:].strip()).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"{ENV_VAR}: cannot read the key file {path}: {reason}") from None
        keys = frozenset(line.strip() for line in lines if line.strip())
        if not keys:
            raise ConfigError(f"{ENV_VAR}: the key file {path} holds no key")
        return keys
    keys = frozenset(k.strip() for k in raw.split(",") if k.strip())
    if not keys:
        raise ConfigError(f"{ENV_VAR}: no key in {raw!r} (expected k1,k2 or @/path/file)")
    return keys


def key_id(key: str) -> str:
    """The stable public name of a key (16 hex digits of a domain-separated SHA-256): what
    the server records as a thread's owner, and may log."""
    return hashlib.sha256(_ID_DOMAIN + key.encode()).hexdigest()[:16]


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1`` (``[::1]`` too); anything else, including
    ``0.0.0.0``, an empty host and other names, is not."""
    host = host.strip().removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: frozenset[str] | None) -> None:
    """Refuse to listen beyond loopback without API keys (raises :class:`UserError`)."""
    if not keys and not is_loopback(host):
        raise UserError(
            f"refusing to listen on {host or 'all interfaces'} without API keys: set "
            f"{ENV_VAR} (k1,k2 or @/path/file), or listen on 127.0.0.1"
        )


@dataclass(frozen=True)
class _KeyTable:
    """The configured keys as (digest, key id) pairs; the keys themselves are not kept."""

    entries: tuple[tuple[bytes, str], ...]

    @classmethod
    def of(cls, keys: frozenset[str]) -> _KeyTable:
        return cls(tuple((_digest(k), key_id(k)) for k in sorted(keys)))

    def match(self, presented: str) -> str | None:
        digest = _digest(presented)
        found: str | None = None
        for known, kid in self.entries:  # every entry, no early exit
            if hmac.compare_digest(digest, known):
                found = kid
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def use_api_keys(app: FastAPI, keys: frozenset[str] | None) -> None:
    """Make ``keys`` (``None``: no authentication) the ones :func:`require_key` accepts."""
    setattr(app.state, _STATE_ATTR, _KeyTable.of(keys) if keys else None)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status_code=401, detail=message, headers={"WWW-Authenticate": f'ApiKey header="{HEADER}"'}
    )


async def require_key(request: Request) -> str | None:
    """FastAPI dependency: the caller's key id, or ``None`` when no keys are configured.

    Raises 401 (``{"detail": "..."}``) when keys are configured and ``x-api-key`` is
    missing or matches none. An app that never called :func:`use_api_keys` fails closed
    (a ``RuntimeError``, hence a 500), rather than serving without authentication."""
    try:
        table: _KeyTable | None = getattr(request.app.state, _STATE_ATTR)
    except AttributeError:
        raise RuntimeError("require_key: the app has no keys set; call use_api_keys()") from None
    if table is None:
        return None
    presented = request.headers.get(HEADER)
    if not presented:
        raise _unauthorized(f"missing API key: send it in the {HEADER} header")
    kid = table.match(presented)
    if kid is None:
        raise _unauthorized("invalid API key")
    return kid
