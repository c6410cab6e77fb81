"""Signed checkpoints: C2SP tlog-checkpoint bodies inside C2SP signed-note envelopes, Ed25519.

A checkpoint commits a log to (origin, size, root). The note is plain text so an auditor
can check it with any signed-note implementation (Go's ``sumdb/note`` included). Parsing
is strict: we only accept what :func:`sign_checkpoint` would have produced for the same
values, plus signatures by keys we do not know (the spec says to ignore those).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger._errors import LedgerError, LedgerVerificationError
from ledger._merkle import HASH_SIZE

# C2SP signed-note §Signature types: 0x01 is Ed25519 over the note text.
SIGNATURE_TYPE_ED25519 = 0x01
# C2SP signed-note §Format: a signature line is em dash (U+2014), space, name, space, base64.
SIGNATURE_PREFIX = "\u2014 "
# C2SP signed-note §Format: verifiers MUST accept at least 16 signatures; we cap the work.
MAX_SIGNATURES = 100
KEY_ID_SIZE = 4
ED25519_SIGNATURE_SIZE = 64
MAX_TREE_SIZE = 2**63 - 1  # what SQLite and every other log implementation can count to

_SIZE_LINE = re.compile(r"0|[1-9][0-9]{0,18}", re.ASCII)


def _malformed(what: str) -> LedgerVerificationError:
    return LedgerVerificationError(f"malformed checkpoint note: {what}")


# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _has_control(text: str, *, allow_newline: bool) -> bool:
    pattern = _CONTROL_BUT_NEWLINE if allow_newline else _CONTROL
    return pattern.search(text) is not None


def _valid_key_name(name: str) -> bool:
    """C2SP signed-note §Format: non-empty, no Unicode spaces, no plus, no control chars."""
    return (
        isinstance(name, str)
        and name != ""
        and "+" not in name
        and not any(c.isspace() for c in name)
        and not _has_control(name, allow_newline=False)
    )


def _b64decode_strict(text: str) -> bytes | None:
    """Decode standard padded base64, or return ``None`` unless ``text`` is its canonical form."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key_id(name: str, public_key: bytes, key_type: int = SIGNATURE_TYPE_ED25519) -> bytes:
    # C2SP signed-note §Ed25519 signatures (type 0x01) and tlog-cosignature (type 0x04):
    # key ID = SHA-256(key name || 0x0A || type || 32-byte public key)[:4]
    material = name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key
    return hashlib.sha256(material).digest()[:KEY_ID_SIZE]


@dataclass(frozen=True)
class ParsedKey:
    """A parsed ``name+keyid+base64(type || Ed25519 key)`` string."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey


def encode_key(name: str, public_key: Ed25519PublicKey, *, key_type: int, what: str) -> str:
    """Return ``<name>+<8 hex key ID>+<base64(key_type || public key)>`` (C2SP signed-note).

    ``what`` names the key in errors. Raises :class:`LedgerError` for an invalid name.
    """
    if not _valid_key_name(name):
        raise LedgerError(f"{what} name must be non-empty, without spaces, plus or control chars")
    raw = _raw_public_key(public_key)
    encoded = base64.b64encode(bytes([key_type]) + raw).decode("ascii")
    return f"{name}+{_key_id(name, raw, key_type).hex()}+{encoded}"


def parse_key(key: str, *, key_type: int, what: str) -> ParsedKey:
    """Parse what :func:`encode_key` makes, of ``key_type``; raise :class:`LedgerError` if bad."""
    if not isinstance(key, str):
        raise LedgerError(f"malformed {what}: want <name>+<key id>+<key>")
    # Split like Go's note.NewVerifier: the base64 key itself may contain "+".
    name, _, rest = key.partition("+")
    key_id_hex, _, encoded = rest.partition("+")
    raw = _b64decode_strict(encoded)
    if (
        not _valid_key_name(name)
        or re.fullmatch(r"[0-9a-f]{8}", key_id_hex) is None
        or raw is None
        or len(raw) != 1 + 32
    ):
        raise LedgerError(f"malformed {what}: want <name>+<key id>+<key>")
    if raw[0] != key_type:
        raise LedgerError(f"{what} is not an Ed25519 key of type 0x{key_type:02x}")
    if _key_id(name, raw[1:], key_type).hex() != key_id_hex:
        raise LedgerError(f"{what} ID does not match its name and key")
    return ParsedKey(name, bytes.fromhex(key_id_hex), Ed25519PublicKey.from_public_bytes(raw[1:]))


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """Return the verifier key string ``<name>+<8 hex key ID>+<base64(0x01 || public key)>``.

    Raises :class:`LedgerError` when ``name`` is not a valid signed-note key name.
    """
    return encode_key(name, public_key, key_type=SIGNATURE_TYPE_ED25519, what="key")


def parse_verifier_key(key: str) -> ParsedKey:
    """Parse a verifier key string; raise :class:`LedgerError` when it is malformed."""
    return parse_key(key, key_type=SIGNATURE_TYPE_ED25519, what="verifier key")


VerifierKeys = str | Sequence[str]  # one verifier key, or a set any of which may sign


def parse_verifier_keys(keys: VerifierKeys) -> list[ParsedKey]:
    """Parse one key or a non-empty set of keys; raise :class:`LedgerError` if any is bad."""
    listed = [keys] if isinstance(keys, str) else list(keys)
    if not listed:
        raise LedgerError("no verifier key given")
    return [parse_verifier_key(key) for key in listed]


def sign_note(text: str, *, key_name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign ``text`` (which must end in a newline) and return the signed note."""
    return sign_note_by(text, [(key_name, private_key)])


def sign_note_by(text: str, signers: Sequence[tuple[str, Ed25519PrivateKey]]) -> str:
    """Sign ``text`` with every (key name, private key) in ``signers``, one line each.

    Several signers are how a key rotation overlaps: verifiers holding either key accept.
    """
    if (
        not isinstance(text, str)
        or not text.endswith("\n")
        or _has_control(text, allow_newline=True)
    ):
        raise LedgerError("note text must end in a newline and hold no control characters")
    if not signers:
        raise LedgerError("a note needs at least one signer")
    prepared = []
    for key_name, private_key in signers:
        if not _valid_key_name(key_name):
            raise LedgerError("key name must be non-empty, without spaces, plus or control chars")
        prepared.append(
            (key_name, _key_id(key_name, _raw_public_key(private_key.public_key())), private_key)
        )
    return _sign_lines(text, prepared)


def _sign_lines(text: str, signers: Sequence[tuple[str, bytes, Ed25519PrivateKey]]) -> str:
    lines = []
    message = text.encode("utf-8")
    for key_name, key_id, private_key in signers:
        encoded = base64.b64encode(key_id + private_key.sign(message)).decode("ascii")
        lines.append(f"{SIGNATURE_PREFIX}{key_name} {encoded}\n")
    return f"{text}\n" + "".join(lines)


@functools.lru_cache(maxsize=64)
def verifier_key_id(key: str) -> tuple[str, bytes]:
    """(key name, key ID) of a verifier key string; cached, as it is a pure function."""
    parsed = parse_verifier_key(key)
    return parsed.name, parsed.key_id


def sign_checkpoint_as(cp: Checkpoint, signers: Sequence[tuple[str, Ed25519PrivateKey]]) -> str:
    """:func:`sign_checkpoint_by` for signers named by their verifier key (``name+id+key``)
    rather than their key name: the key ID comes from the verifier key, so signing costs
    one Ed25519 signature per key, without deriving the public key from the private one
    each time (another scalar multiplication, as costly as the signature). Each private
    key must be the verifier key's; :class:`~ledger.Ledger` pairs them when it opens.
    """
    prepared = [(*verifier_key_id(key), private_key) for key, private_key in signers]
    return _sign_lines(cp.body().decode("utf-8"), prepared)


def open_note(note: str, verifier_key: VerifierKeys) -> str:
    """Check ``note`` is signed by ``verifier_key`` and return its text (final newline included).

    ``verifier_key`` may be a set of keys (e.g. across a key rotation): at least one must
    have signed. Signatures by other keys are ignored; a bad signature by a known key
    fails the whole note. Raises :class:`LedgerVerificationError` (or :class:`LedgerError`
    for a malformed verifier key).
    """
    verifiers = parse_verifier_keys(verifier_key)
    known = {(v.name, v.key_id): v for v in verifiers}
    if not isinstance(note, str):
        raise _malformed("not a string")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed("not valid UTF-8") from None
    if _has_control(note, allow_newline=True):
        raise _malformed("control character (a note uses only \\n line ends)")
    split = note.rfind("\n\n")
    if split < 0:
        raise _malformed("no blank line before the signatures")
    text, signatures = note[: split + 1], note[split + 2 :]
    if not signatures.endswith("\n"):
        raise _malformed("missing final newline")
    lines = signatures[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise _malformed("too many signatures")
    verified = False
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise _malformed("signature line does not start with an em dash and a space")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        raw = _b64decode_strict(encoded)
        if not _valid_key_name(name) or raw is None or len(raw) <= KEY_ID_SIZE:
            raise _malformed("bad signature line")
        verifier = known.get((name, raw[:KEY_ID_SIZE]))
        if verifier is None:
            continue  # C2SP signed-note: verifiers MUST ignore signatures from unknown keys
        try:
            verifier.public_key.verify(raw[KEY_ID_SIZE:], text.encode("utf-8"))
        except InvalidSignature:
            raise LedgerVerificationError(f"signature by {verifier.name} does not verify") from None
        verified = True
    if not verified:
        names = ", ".join(sorted({v.name for v in verifiers}))
        raise LedgerVerificationError(f"no signature by {names}")
    return text


@dataclass(frozen=True)
class Checkpoint:
    """A log's commitment to its first ``size`` entries (C2SP tlog-checkpoint body)."""

    origin: str
    size: int
    root_hash: bytes

    def __post_init__(self) -> None:
        if (
            not isinstance(self.origin, str)
            or not self.origin
            or _has_control(self.origin, allow_newline=False)
        ):
            raise LedgerError("checkpoint origin must be a non-empty line of text")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise LedgerError("checkpoint size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise LedgerError("checkpoint size is out of range")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise LedgerError(f"checkpoint root hash must be {HASH_SIZE} bytes")

    def body(self) -> bytes:
        """Return the note text: ``origin\\nsize\\nbase64(root)\\n`` (UTF-8)."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n".encode()


def sign_checkpoint_by(cp: Checkpoint, signers: Sequence[tuple[str, Ed25519PrivateKey]]) -> str:
    """Return the signed note for ``cp`` with one signature line per (key name, key)."""
    return sign_note_by(cp.body().decode("utf-8"), signers)


def sign_checkpoint(cp: Checkpoint, *, key_name: str, private_key: Ed25519PrivateKey) -> str:
    """Return the signed note for ``cp``: body, blank line, one Ed25519 signature line.

    Raises :class:`LedgerError` when ``key_name`` is not a valid signed-note key name.
    """
    return sign_note(cp.body().decode("utf-8"), key_name=key_name, private_key=private_key)


def parse_checkpoint_body(text: str) -> Checkpoint:
    """Parse a checkpoint body (not its signatures); raise :class:`LedgerVerificationError`."""
    return _parse_body(text)


def _parse_body(text: str) -> Checkpoint:
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        # Extension lines are legal in C2SP but never written by us; refusing them keeps
        # "what was signed" equal to what Checkpoint can represent.
        raise _malformed("want exactly origin, size and root hash lines")
    origin, size_line, root_line = lines
    if not origin:
        raise _malformed("empty origin")
    if _SIZE_LINE.fullmatch(size_line) is None or int(size_line) > MAX_TREE_SIZE:
        raise _malformed("size is not a canonical decimal number")
    root = _b64decode_strict(root_line)
    if root is None or len(root) != HASH_SIZE:
        raise _malformed("root hash is not the base64 of 32 bytes")
    cp = Checkpoint(origin, int(size_line), root)
    if cp.body().decode("utf-8") != text:
        raise _malformed("body is not in canonical form")
    return cp


def open_checkpoint(note: str, verifier_key: VerifierKeys) -> Checkpoint:
    """Verify a signed checkpoint note with ``verifier_key`` and return the checkpoint.

    Raises :class:`LedgerVerificationError` when the note is malformed or not in
    canonical form, or carries no valid signature by that key; :class:`LedgerError` when
    ``verifier_key`` itself is malformed.
    """
    return _parse_body(open_note(note, verifier_key))
