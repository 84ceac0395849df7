"""Ed25519 keys: what signs run seals and anchors, and what checks them.

Anyone who can write the database can recompute every hash in it, so a hash
chain alone proves nothing against its own administrator. A signature made
with a key kept outside the database can only be made by the key's holder:
a forger who deletes a `RunFinished`, extends the run and seals it again
cannot sign that seal, and cannot alter an anchor kept elsewhere.

The private key is a PEM file (PKCS #8, written only for its owner, mode
0600) that ``kasmina keygen`` makes; ``KASMINA_SIGNING_KEY`` names it for
the writers. A verifier needs only the public key, 64 hex digits, which
``KASMINA_PUBLIC_KEY`` (or ``verify --public-key``) pins: a seal or anchor
signed by any other key is then a fault, as is an unsigned one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kasmina.errors import SigningError
from kasmina.events import SealSignature
from kasmina.jcs import jcs_text

SIGNING_KEY_ENV = "KASMINA_SIGNING_KEY"
PUBLIC_KEY_ENV = "KASMINA_PUBLIC_KEY"
ALGORITHM = "Ed25519"


@dataclass(frozen=True, slots=True)
class SigningKey:
    private: Ed25519PrivateKey

    @property
    def public_hex(self) -> str:
        return public_hex(self.private.public_key())

    def sign(self, message: bytes) -> str:
        return self.private.sign(message).hex()


def public_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def generate(path: Path, *, overwrite: bool = False) -> SigningKey:
    """A new key written to `path` (mode 0600), and its public half beside it as ``.pub``."""
    if path.exists() and not overwrite:
        raise SigningError(f"{path} exists already; pass --force to replace the key in it")
    key = SigningKey(Ed25519PrivateKey.generate())
    pem = key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_TRUNC
    path.with_name(path.name + ".pub").write_text(key.public_hex + "\n")
    return key


def load(path: Path) -> SigningKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningError(f"{path} holds a {type(private).__name__}, not an Ed25519 key")
    return SigningKey(private)


def default_key_path() -> Path:
    """Where ``kasmina keygen`` writes: ``KASMINA_SIGNING_KEY``, else the user's config folder."""
    named = os.environ.get(SIGNING_KEY_ENV)
    if named:
        return Path(named)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "kasmina" / "signing-key.pem"


def configured_key() -> SigningKey | None:
    """The writer's key named by ``KASMINA_SIGNING_KEY``, or None when unset."""
    named = os.environ.get(SIGNING_KEY_ENV)
    return load(Path(named)) if named else None


def parse_public(text: str) -> str:
    """A public key as 64 lowercase hex digits, from the digits or a ``.pub`` file holding them."""
    candidate = text.strip()
    if len(candidate) != 64 or not _is_hex(candidate):
        path = Path(candidate)
        try:
            candidate = path.read_text().strip()
        except OSError:
            raise SigningError(
                f"public key {text[:80]!r} is neither 64 hex digits nor a readable .pub file"
            ) from None
        if len(candidate) != 64 or not _is_hex(candidate):
            raise SigningError(f"{path} does not hold an Ed25519 public key (64 hex digits)")
    return candidate.lower()


def trusted_public_key(given: str | None = None) -> str | None:
    """The public key a verifier pins: `given`, else ``KASMINA_PUBLIC_KEY``, else none."""
    text = given if given is not None else os.environ.get(PUBLIC_KEY_ENV)
    return parse_public(text) if text else None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def seal_message(run_id: str, status: str, seal: dict[str, str]) -> bytes:
    """The bytes a run's seal signature covers: RFC 8785 text of its run, status and seal."""
    return jcs_text({"run_id": run_id, "seal": seal, "status": status}).encode()


def tip_message(run_id: str, position: int, digest: str) -> bytes:
    """The bytes a run tip's signature covers: RFC 8785 text of the run, position and hash.

    In ledger format 2 an event's hash commits to every event of its run
    before it, so signing the run's last one signs the whole run so far.
    """
    return jcs_text({"hash": digest, "position": position, "run_id": run_id}).encode()


def sign_seal(
    key: SigningKey | None, run_id: str, status: str, seal: dict[str, str]
) -> SealSignature | None:
    """The seal's signature by `key`, or None without a key."""
    if key is None:
        return None
    return SealSignature(
        public_key=key.public_hex, value=key.sign(seal_message(run_id, status, seal))
    )


#: What is wrong with a signature: missing where a key is pinned, not matching, or another key's.
Verdict = Literal["unsigned", "bad", "untrusted"]


def signature_problem(
    what: str, signed: tuple[str, str] | None, message: Callable[[], bytes], trusted: str | None
) -> tuple[Verdict, str] | None:
    """The one rule for a seal's or an anchor's signature (`signed`: public key, value).

    Unsigned is fine unless a key is pinned; a signature must match `message`;
    with a pinned key, it must be that key's. `what` names the thing signed.
    """
    if signed is None:
        if trusted is None:
            return None
        return "unsigned", f"{what} is not signed, but key {trusted[:12]}… is pinned"
    public, value = signed
    if not verify_signature(public, message(), value):
        return (
            "bad",
            f"{what}'s signature does not match it (key {public[:12]}…): altered after signing",
        )
    if trusted is not None and public != trusted:
        return "untrusted", (
            f"{what} is signed by key {public[:12]}…, not by the pinned key {trusted[:12]}…"
        )
    return None


def verify_signature(public: str, message: bytes, signature: str) -> bool:
    """Whether `signature` (hex) is `public`'s signature of `message`; False for malformed input."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
        key.verify(bytes.fromhex(signature), message)
    except (ValueError, InvalidSignature):
        return False
    return True
