"""The owner's signing key for pickled payloads (HMAC-SHA256).

A pickle runs code when it is loaded, so statekit only unpickles bytes signed
with the reader's own key. The key comes from ``STATEKIT_KEY`` (any string of
at least 32 characters) or from a key file, by default
``~/.config/statekit/key`` (``STATEKIT_KEY_FILE`` overrides the path). The file
is created on first use with 32 random bytes, readable by its owner only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from .errors import StatekitError

ENV_KEY = "STATEKIT_KEY"
ENV_KEY_FILE = "STATEKIT_KEY_FILE"


def default_key_path() -> Path:
    """Where the key file lives unless ``STATEKIT_KEY_FILE`` says otherwise."""
    env = os.environ.get(ENV_KEY_FILE)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "statekit" / "key"


class SigningKey:
    """Signs and checks pickled payloads. ``key_id`` names a key without revealing it."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise StatekitError("The statekit signing key is too short; use at least 32 characters.")
        self._key = key
        self.key_id = hashlib.sha256(b"statekit-key-id:" + key).hexdigest()[:12]

    def sign(self, data: bytes | memoryview) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def verify(self, data: bytes | memoryview, signature: str) -> bool:
        return hmac.compare_digest(self.sign(data), signature)

    @classmethod
    def load(cls) -> SigningKey:
        """The key from the environment, else from the key file (created if missing)."""
        env = os.environ.get(ENV_KEY)
        if env:
            return cls(env.encode("utf-8"))
        path = default_key_path()
        if not path.exists():
            _create_key_file(path)
        if os.name == "posix" and path.stat().st_mode & 0o077:
            raise StatekitError(
                f"The signing key file {path} is readable by others; run `chmod 600 {path}`."
            )
        return cls(path.read_bytes().strip())


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_hex(32).encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(token)
        fh.flush()
        os.fsync(fh.fileno())
