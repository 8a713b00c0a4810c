"""Signed releases in minisign's format, and the check an archive passes before anything reads it.

The archive's own ``manifest.json`` holds every library's sha256, but it lives
inside the archive: whoever can replace the archive replaces the manifest
with it. A detached signature made with a key the user pinned beforehand (or
a sha256 pinned the way pip's ``--require-hashes`` pins one) is what closes
that gap.

The format is minisign's (https://jedisct1.github.io/minisign/), so Debian's
``minisign`` command verifies what this module signs and the reverse:

* public key: ``untrusted comment: …`` then base64 of ``"Ed" ‖ key id (8) ‖
  Ed25519 public key (32)``; the base64 line alone is what ``minisign -P``
  takes;
* secret key: base64 of ``"Ed" ‖ kdf ("Sc" = scrypt, or two zero bytes) ‖
  "B2" ‖ salt (32) ‖ opslimit (8, LE) ‖ memlimit (8, LE) ‖ key id (8) ‖
  Ed25519 secret key (64) ‖ BLAKE2b-256 checksum (32)``, the last 104 bytes
  XORed with scrypt(password) when encrypted;
* signature ``<file>.minisig``: base64 of ``alg ‖ key id ‖ Ed25519(data)``
  where alg ``"ED"`` (minisign's default) signs the file's BLAKE2b-512 and
  the legacy ``"Ed"`` signs the file itself, then the trusted comment and a
  global signature over ``signature ‖ trusted comment``.

Ed25519 comes from ``cryptography`` (PyCA's binding to OpenSSL, with wheels on
every platform the users have); BLAKE2b and scrypt from ``hashlib``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import concurrent.futures
import contextlib
import getpass
import hashlib
import hmac
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ipex_aot import log
from ipex_aot.archive import require_archive_file
from ipex_aot.errors import SignatureError, UsageError
from ipex_aot.fsutil import CHUNK, atomic_output
from ipex_aot.settings import Settings
from ipex_aot.untrusted import not_a_regular_file

SIG_SUFFIX = ".minisig"
#: The file an app ships beside its ``intel_extension_for_pytorch`` folder to pin the publisher's key.
TRUST_KEY_FILE = "ipex-aot-trust.pub"
DEFAULT_PUBLIC_KEY = "ipex-aot.pub"
DEFAULT_SECRET_KEY = "ipex-aot.key"

_SIGALG = b"Ed"
_SIGALG_HASHED = b"ED"
_KDF_SCRYPT = b"Sc"
_KDF_NONE = b"\0\0"
_CHK_B2 = b"B2"
_COMMENT = "untrusted comment: "
_TRUSTED = "trusted comment: "
#: minisign's (libsodium's "sensitive") scrypt limits: 1 GiB of memory, a second or more per use.
OPSLIMIT = 1 << 25
MEMLIMIT = 1 << 30
_PUBLIC_LEN = 2 + 8 + 32
_SECRET_LEN = 2 + 2 + 2 + 32 + 8 + 8 + 104
_SIGNATURE_LEN = 2 + 8 + 64
#: minisign's own limit on a trusted comment (TRUSTEDCOMMENTMAXBYTES less its prefix).
_TRUSTED_MAX = 8192 - len(_TRUSTED) - 1
#: No real signature file comes near this; a bigger one is not read into memory.
MAX_SIGNATURE_BYTES = 16 << 10


def _ed25519():  # noqa: ANN202 - the module, imported late so that commands without keys never load it
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise UsageError("signing needs the 'cryptography' package: pip install cryptography") from None
    return ed25519


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, length: int, what: str) -> bytes:
    try:
        data = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if len(data) != length:
        raise SignatureError(f"{what} is not base64 of {length} bytes; is it really a minisign file?")
    return data


def key_id_hex(key_id: bytes) -> str:
    """The key id as minisign prints it: its 8 bytes as a little-endian number, upper-case hex, unpadded."""
    return f"{int.from_bytes(key_id, 'little'):X}"  # %PRIX64: no leading zeros


# --- keys ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PublicKey:
    key_id: bytes
    key: bytes
    #: Where the key came from, for messages ("--trust-key", a file name, …).
    source: str = ""

    @property
    def id(self) -> str:
        return key_id_hex(self.key_id)

    def to_base64(self) -> str:
        """The one line ``minisign -P`` takes."""
        return _b64(_SIGALG + self.key_id + self.key)

    def to_text(self) -> str:
        return f"{_COMMENT}minisign public key {self.id}\n{self.to_base64()}\n"

    @classmethod
    def parse(cls, text: str, source: str = "") -> PublicKey:
        """A public key file's text, or its base64 line alone."""
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        if lines and lines[0].startswith(_COMMENT):
            lines = lines[1:]
        if len(lines) != 1:
            raise SignatureError(f"{source or 'public key'}: expected one base64 line (a minisign public key)")
        data = _unb64(lines[0], _PUBLIC_LEN, source or "public key")
        if data[:2] != _SIGALG:
            raise SignatureError(f"{source or 'public key'}: algorithm {data[:2]!r} is not Ed25519 ('Ed')")
        return cls(data[2:10], data[10:], source)

    def check(self, signature: Signature, *, prehash: bytes | None = None, data: bytes | None = None) -> None:
        """Both Ed25519 signatures of a minisign signature; SignatureError says which part failed."""
        from cryptography.exceptions import InvalidSignature

        if signature.key_id != self.key_id:
            raise SignatureError(f"signed by key {signature.key_id_hex}, not by the trusted key {self.id}"
                                 f"{f' ({self.source})' if self.source else ''}")
        message = prehash if signature.prehashed else data
        if message is None:
            raise ValueError("the prehash (ED) or the whole file (Ed) is needed")
        public = _ed25519().Ed25519PublicKey.from_public_bytes(self.key)
        try:
            public.verify(signature.signature, message)
        except InvalidSignature:
            raise SignatureError(f"the signature by key {self.id} does not match the file: the file was changed "
                                 "after signing, or the signature belongs to another file") from None
        try:
            public.verify(signature.global_signature, signature.signature + signature.trusted_comment.encode())
        except InvalidSignature:
            raise SignatureError(f"the trusted comment of the signature by key {self.id} was changed") from None


@dataclass(frozen=True)
class SecretKey:
    key_id: bytes
    seed: bytes  # Ed25519 private key (32 bytes); libsodium's 64-byte form is seed ‖ public key
    public: bytes

    @classmethod
    def generate(cls) -> SecretKey:
        from cryptography.hazmat.primitives import serialization

        private = _ed25519().Ed25519PrivateKey.generate()
        seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
        return cls(secrets.token_bytes(8), seed, _public_of(seed))

    def public_key(self) -> PublicKey:
        return PublicKey(self.key_id, self.public)

    def sign(self, message: bytes) -> bytes:
        return _ed25519().Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)

    def _checksum(self) -> bytes:
        return hashlib.blake2b(_SIGALG + self.key_id + self.seed + self.public, digest_size=32).digest()

    def to_text(self, password: str | None, *, opslimit: int = OPSLIMIT, memlimit: int = MEMLIMIT) -> str:
        """The key file's text, encrypted with PASSWORD (scrypt, as minisign does) unless it is None."""
        keynum_sk = self.key_id + self.seed + self.public + self._checksum()
        if password is None:
            # minisign -W writes zero salt and limits; its checksum is not checked for such keys.
            head = _SIGALG + _KDF_NONE + _CHK_B2 + bytes(32) + bytes(16)
            return f"{_COMMENT}minisign secret key\n{_b64(head + keynum_sk)}\n"
        salt = secrets.token_bytes(32)
        stream = _kdf(password, salt, opslimit, memlimit)
        head = (_SIGALG + _KDF_SCRYPT + _CHK_B2 + salt + opslimit.to_bytes(8, "little")
                + memlimit.to_bytes(8, "little"))
        return f"{_COMMENT}minisign encrypted secret key\n{_b64(head + _xor(keynum_sk, stream))}\n"

    @staticmethod
    def is_encrypted(text: str) -> bool:
        return _secret_blob(text, "secret key")[2:4] == _KDF_SCRYPT

    @classmethod
    def parse(cls, text: str, password: str | None = None, source: str = "secret key") -> SecretKey:
        data = _secret_blob(text, source)
        if data[:2] != _SIGALG or data[4:6] != _CHK_B2:
            raise SignatureError(f"{source}: algorithms {data[:2]!r}/{data[4:6]!r} are not minisign's Ed/B2")
        kdf, salt = data[2:4], data[6:38]
        opslimit, memlimit = int.from_bytes(data[38:46], "little"), int.from_bytes(data[46:54], "little")
        keynum_sk = data[54:]
        if kdf == _KDF_SCRYPT:
            if password is None:
                raise UsageError(f"{source} is encrypted: set IPEX_AOT_SIGN_PASSWORD or run on a terminal to be asked")
            keynum_sk = _xor(keynum_sk, _kdf(password, salt, opslimit, memlimit))
        elif kdf != _KDF_NONE:
            raise SignatureError(f"{source}: key derivation {kdf!r} is neither scrypt nor none")
        key = cls(keynum_sk[:8], keynum_sk[8:40], keynum_sk[40:72])
        chk = keynum_sk[72:]
        # minisign leaves the checksum of an unencrypted (-W) key zero and does not check it.
        if (kdf == _KDF_SCRYPT or any(chk)) and not hmac.compare_digest(chk, key._checksum()):
            raise SignatureError(f"{source}: wrong password" if kdf == _KDF_SCRYPT
                                 else f"{source}: checksum mismatch; the key file is damaged")
        if _public_of(key.seed) != key.public:
            raise SignatureError(f"{source}: the public half does not belong to the secret half; the key is damaged")
        return key


def _secret_blob(text: str, source: str) -> bytes:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if lines and lines[0].startswith(_COMMENT):
        lines = lines[1:]
    if len(lines) != 1:
        raise SignatureError(f"{source}: expected one base64 line (a minisign secret key)")
    return _unb64(lines[0], _SECRET_LEN, source)


def _public_of(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    private = _ed25519().Ed25519PrivateKey.from_private_bytes(seed)
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def scrypt_params(opslimit: int, memlimit: int) -> tuple[int, int, int]:
    """(N, r, p) from libsodium's opslimit/memlimit, as crypto_pwhash_scryptsalsa208sha256 picks them."""
    opslimit = max(opslimit, 32768)
    r = 8
    if opslimit < memlimit // 32:
        p = 1
        max_n = opslimit // (r * 4)
    else:
        max_n = memlimit // (r * 128)
    n_log2 = 1
    while n_log2 < 63 and (1 << n_log2) <= max_n // 2:
        n_log2 += 1
    if opslimit >= memlimit // 32:
        p = min((opslimit // 4) // (1 << n_log2), 0x3FFFFFFF) // r
    return 1 << n_log2, r, p


def _kdf(password: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    n, r, p = scrypt_params(opslimit, memlimit)
    if p < 1 or memlimit > 1 << 32:
        raise SignatureError(f"secret key: scrypt limits ops={opslimit} mem={memlimit} are out of range")
    try:
        return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=104,
                              maxmem=128 * r * (n + p + 2) + (1 << 20))
    except (ValueError, MemoryError) as e:
        raise SignatureError(f"secret key: scrypt with N={n} r={r} p={p} failed ({e}); more memory is needed") from None


# --- signatures ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Signature:
    algorithm: bytes
    key_id: bytes
    signature: bytes
    trusted_comment: str
    global_signature: bytes
    untrusted_comment: str = ""

    @property
    def prehashed(self) -> bool:
        return self.algorithm == _SIGALG_HASHED

    @property
    def key_id_hex(self) -> str:
        return key_id_hex(self.key_id)

    def to_text(self) -> str:
        return (f"{_COMMENT}{self.untrusted_comment}\n{_b64(self.algorithm + self.key_id + self.signature)}\n"
                f"{_TRUSTED}{self.trusted_comment}\n{_b64(self.global_signature)}\n")

    @classmethod
    def parse(cls, text: str, source: str = "signature") -> Signature:
        lines = text.splitlines()
        if len(lines) < 4 or not lines[0].startswith(_COMMENT) or not lines[2].startswith(_TRUSTED):
            raise SignatureError(f"{source}: not a minisign signature (expected 'untrusted comment:', base64, "
                                 "'trusted comment:', base64)")
        data = _unb64(lines[1], _SIGNATURE_LEN, source)
        if data[:2] not in (_SIGALG, _SIGALG_HASHED):
            raise SignatureError(f"{source}: algorithm {data[:2]!r} is neither Ed nor ED")
        trusted = lines[2][len(_TRUSTED):].rstrip("\r")
        if not all(c == "\t" or c.isprintable() for c in trusted):
            raise SignatureError(f"{source}: the trusted comment holds unprintable characters")
        return cls(data[:2], data[2:10], data[10:], trusted, _unb64(lines[3], 64, source),
                   lines[0][len(_COMMENT):].rstrip("\r"))


@dataclass(frozen=True)
class Digests:
    blake2b: bytes  # BLAKE2b-512, what an "ED" signature signs (b"" when not asked for)
    sha256: str  # "" when not asked for
    size: int


def file_digests(path: Path, *, blake2b: bool = True, sha256: bool = True) -> Digests:
    """BLAKE2b-512 and/or sha256 of a file in one read (archives are hundreds of MB).

    When both are asked for, sha256 runs in a second thread beside BLAKE2b (hashlib releases
    the GIL on large updates), so the pair costs about what the slower one costs alone.
    """
    b2, s256, size = hashlib.blake2b(), hashlib.sha256(), 0
    with open(path, "rb") as f, concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending: concurrent.futures.Future[None] | None = None
        while chunk := f.read(CHUNK):
            size += len(chunk)
            if blake2b and sha256:
                if pending is not None:
                    pending.result()
                pending = pool.submit(s256.update, chunk)
                b2.update(chunk)
            elif blake2b:
                b2.update(chunk)
            elif sha256:
                s256.update(chunk)
        if pending is not None:
            pending.result()
    return Digests(b2.digest() if blake2b else b"", s256.hexdigest() if sha256 else "", size)


def sign_file(path: Path, key: SecretKey, *, trusted_comment: str | None = None,
              untrusted_comment: str = "signature from ipex-aot secret key",
              digests: Digests | None = None) -> Signature:
    """A prehashed ("ED") signature of PATH, as ``minisign -S`` makes by default."""
    path = Path(path)
    if digests is None or not digests.blake2b:
        digests = file_digests(path, sha256=False)
    if trusted_comment is None:
        trusted_comment = f"timestamp:{int(time.time())}\tfile:{path.name}\thashed"
    if "\n" in trusted_comment or "\r" in trusted_comment or len(trusted_comment.encode()) > _TRUSTED_MAX:
        raise UsageError("a trusted comment is one line of at most 8 KiB")
    sig = key.sign(digests.blake2b)
    return Signature(_SIGALG_HASHED, key.key_id, sig, trusted_comment,
                     key.sign(sig + trusted_comment.encode()), untrusted_comment)


def write_signature(path: Path, signature: Signature) -> Path:
    with atomic_output(path, "w") as f:
        f.write(signature.to_text())
    return Path(path)


def read_signature(path: Path) -> Signature:
    kind = not_a_regular_file(path)
    if kind:
        raise SignatureError(f"{path}: is {kind}, not a signature file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        raise SignatureError(f"{path}: no such signature file") from None
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"{path}: {MAX_SIGNATURE_BYTES // 1024} KiB or more; not a minisign signature")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError(f"{path}: not UTF-8 text; not a minisign signature") from None
    return Signature.parse(text, str(path))


def verify_file(path: Path, signature: Signature, key: PublicKey, digests: Digests | None = None) -> None:
    """SignatureError unless SIGNATURE is KEY's valid signature of PATH."""
    if signature.prehashed:
        if digests is None or not digests.blake2b:
            digests = file_digests(path, sha256=False)
        key.check(signature, prehash=digests.blake2b)
    else:
        # Legacy signatures cover the file itself; minisign reads it whole too.
        key.check(signature, data=Path(path).read_bytes())


# --- loading keys from what users give -----------------------------------------------------

def load_public_key(value: str, source: str) -> PublicKey:
    """A public key given as its base64 line (what ``minisign -P`` takes) or as a .pub file."""
    value = value.strip()
    if not value:
        raise UsageError(f"{source} is empty; give a minisign public key (RW…) or a .pub file")
    if value.startswith("RW") and len(value) == 56 and "/" not in value[:2]:
        try:
            return PublicKey.parse(value, source)
        except SignatureError as e:
            raise UsageError(f"{source}: {e.message.split(': ', 1)[-1]}") from None
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{source} {value!r} is neither a minisign public key (RW…, 56 characters) nor a file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{source}: cannot read {path} ({e})") from None
    try:
        return PublicKey.parse(text, f"{path}")
    except SignatureError as e:
        raise UsageError(e.message) from None


def _password(settings: Settings, prompt: str, *, twice: bool = False) -> str | None:
    if settings.sign_password is not None:
        return settings.sign_password
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass(prompt)
    if twice and getpass.getpass("Password (one more time): ") != first:
        raise UsageError("the passwords do not match")
    return first


def load_secret_key(settings: Settings, path: Path | None = None) -> SecretKey | None:
    """The signing key: PATH, else IPEX_AOT_SIGN_KEY (the key's text), else IPEX_AOT_SIGN_KEY_FILE; None if none."""
    if path is not None:
        source, text = str(path), _read_key_file(Path(path))
    elif settings.sign_key:
        source, text = "IPEX_AOT_SIGN_KEY", settings.sign_key
    elif settings.sign_key_file is not None:
        source, text = str(settings.sign_key_file), _read_key_file(settings.sign_key_file)
    else:
        return None
    password = None
    try:
        if SecretKey.is_encrypted(text):
            password = _password(settings, f"Password for {source}: ")
        return SecretKey.parse(text, password, source)
    except SignatureError as e:
        raise UsageError(e.message) from None


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"secret key {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None


# --- the check before an archive is read ---------------------------------------------------

@dataclass(frozen=True)
class Trust:
    """What an archive is checked against before any entry is read."""

    key: PublicKey | None = None
    sha256: str | None = None
    #: The signature file; None means ``<archive>.minisig``.
    signature: Path | None = None

    @property
    def pinned(self) -> bool:
        return self.key is not None or self.sha256 is not None


def parse_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:"):]
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise UsageError(f"--sha256 {value!r} is not 64 hexadecimal digits")
    return text


def resolve_trust(settings: Settings, *, trust_key: str | None = None, sha256: str | None = None,
                  signature: Path | None = None, key_dirs: Iterable[Path] = ()) -> Trust:
    """The key to pin: --trust-key, else IPEX_AOT_TRUST_KEY, else the first KEY_DIR holding ipex-aot-trust.pub."""
    key = None
    if trust_key:
        key = load_public_key(trust_key, "--trust-key")
    elif settings.trust_key:
        key = load_public_key(settings.trust_key, "IPEX_AOT_TRUST_KEY")
    else:
        for folder in key_dirs:
            candidate = Path(folder) / TRUST_KEY_FILE
            if candidate.is_file():
                key = load_public_key(str(candidate), "the app's key file")
                break
    return Trust(key, parse_sha256(sha256), Path(signature) if signature else None)


def check_archive(archive: Path, trust: Trust, *, signature_text: str | None = None) -> str:
    """Check ARCHIVE's own bytes against what the user pinned, before any entry of it is read.

    Refuses (SignatureError, exit 9) a sha256 that differs from ``--sha256``,
    and, under a pinned key, a missing, malformed or foreign signature.
    Returns one line saying what was checked, saying plainly when nothing
    outside the archive vouched for it.
    """
    archive = require_archive_file(archive)
    sig_path = trust.signature or archive.with_name(archive.name + SIG_SUFFIX)
    if not trust.pinned:
        present = " (a signature sits beside it, but no key is pinned to check it against)" if sig_path.is_file() else ""
        return (f"{archive.name}: no trusted key pinned (--trust-key, IPEX_AOT_TRUST_KEY or {TRUST_KEY_FILE}) and no "
                f"--sha256: only the archive's own hashes were checked, which whoever can replace the archive "
                f"can replace too{present}")
    signature = None
    if trust.key is not None:
        try:
            signature = (Signature.parse(signature_text, f"{sig_path}") if signature_text is not None
                         else read_signature(sig_path))
        except SignatureError as e:
            raise SignatureError(f"{archive}: refused under the pinned key {trust.key.id}: {e.message}; "
                                 "nothing was changed") from None
    # Only what is pinned is computed: BLAKE2b for a prehashed signature, sha256 for --sha256.
    want_b2, want_sha = signature is not None and signature.prehashed, trust.sha256 is not None
    digests = file_digests(archive, blake2b=want_b2, sha256=want_sha) if want_b2 or want_sha else None
    said = []
    if trust.sha256 is not None and digests is not None:
        if digests.sha256 != trust.sha256:
            raise SignatureError(f"{archive}: sha256 {digests.sha256} is not the pinned {trust.sha256}; "
                                 "refusing it, nothing was changed")
        said.append("sha256 matches --sha256")
    if trust.key is not None and signature is not None:
        try:
            verify_file(archive, signature, trust.key, digests)
        except SignatureError as e:
            raise SignatureError(f"{archive}: refused: {e.message}; nothing was changed") from None
        said.append(f"signed by the trusted key {trust.key.id} ({signature.trusted_comment})")
    return f"{archive.name}: " + "; ".join(said)


def check_trust(archive: Path, trust: Trust) -> None:
    """check_archive, its answer logged: plainly a warning when nothing outside the archive vouched for it."""
    message = check_archive(archive, trust)
    (log.info if trust.pinned else log.warn)(message)


# --- CLI -----------------------------------------------------------------------------------

def add_trust_arguments(p: argparse.ArgumentParser) -> None:
    """--trust-key, --sha256 and --signature, shared by install and verify."""
    p.add_argument("--trust-key", metavar="KEY|FILE",
                   help="refuse the archive unless this minisign public key (RW…, or a .pub file) signed it "
                        f"(default: IPEX_AOT_TRUST_KEY, then {TRUST_KEY_FILE} beside the IPEX folder)")
    p.add_argument("--sha256", metavar="HEX", help="refuse the archive unless its own sha256 is this one")
    p.add_argument("--signature", type=Path, metavar="FILE",
                   help="the archive's minisign signature (default: ARCHIVE.minisig, or URL.minisig)")


def verify_howto(key: PublicKey, archive: str) -> str:
    """Markdown: the public key and how to check a download by hand."""
    return (f"Signed with minisign key `{key.id}`:\n\n```\n{key.to_base64()}\n```\n\n"
            f"Check a download before using it (either command; both need `{archive}.minisig` beside it):\n\n"
            f"```\nminisign -Vm {archive} -P {key.to_base64()}\n"
            f"ipex-aot verify {archive} --trust-key {key.to_base64()}\n```\n")


def register(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    k = sub.add_parser("keygen", help="make a signing key pair (minisign's format)",
                       description="Write a minisign-compatible Ed25519 key pair. The secret key is encrypted with "
                                   "IPEX_AOT_SIGN_PASSWORD (or a password asked on the terminal) unless -W is given.")
    k.add_argument("--public-key", "-p", type=Path, default=Path(DEFAULT_PUBLIC_KEY),
                   help=f"public key file to write (default {DEFAULT_PUBLIC_KEY})")
    k.add_argument("--secret-key", "-s", type=Path, default=Path(DEFAULT_SECRET_KEY),
                   help=f"secret key file to write (default {DEFAULT_SECRET_KEY})")
    k.add_argument("-W", "--unencrypted", action="store_true", help="do not encrypt the secret key (as minisign -W)")
    k.add_argument("--force", "-f", action="store_true", help="overwrite existing key files")
    k.set_defaults(func=_cmd_keygen)
    s = sub.add_parser("sign", help="sign files: FILE.minisig beside each (minisign's format)")
    s.add_argument("files", nargs="+", type=Path, metavar="FILE")
    s.add_argument("--secret-key", "-s", type=Path,
                   help="secret key file (default: IPEX_AOT_SIGN_KEY, then IPEX_AOT_SIGN_KEY_FILE)")
    s.add_argument("--trusted-comment", "-t", help="one line signed with the file (default: time and file name)")
    s.set_defaults(func=_cmd_sign)


def _cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    for path in (args.public_key, args.secret_key):
        if path.exists() and not args.force:
            raise UsageError(f"{path} exists; give --force to overwrite it (signatures by the old key will no longer "
                             "be checkable with the new one)")
    password = None
    if not args.unencrypted:
        password = _password(settings, "Password: ", twice=True)
        if password is None:
            raise UsageError("no password to encrypt the secret key: set IPEX_AOT_SIGN_PASSWORD, run on a terminal, "
                             "or give -W for an unencrypted key")
    key = SecretKey.generate()
    if password is not None:
        log.info("deriving a key from the password (scrypt, 1 GiB, a few seconds)")
    _write_secret(args.secret_key, key.to_text(password))
    with atomic_output(args.public_key, "w") as f:
        f.write(key.public_key().to_text())
    log.info(f"secret key: {args.secret_key} (keep it secret{'' if password else '; it is NOT encrypted'})")
    log.info(f"public key: {args.public_key}")
    print(key.public_key().to_base64())
    return 0


def _write_secret(path: Path, text: str) -> None:
    """Like fsutil.atomic_output, but the file stays 0600 (mkstemp's mode) from its first byte to the rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _cmd_sign(args: argparse.Namespace, settings: Settings) -> int:
    key = load_secret_key(settings, args.secret_key)
    if key is None:
        raise UsageError("no secret key: give --secret-key FILE, or set IPEX_AOT_SIGN_KEY (the key's text) or "
                         "IPEX_AOT_SIGN_KEY_FILE")
    for path in args.files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        digests = file_digests(path, sha256=False)
        sig = sign_file(path, key, trusted_comment=args.trusted_comment, digests=digests)
        verify_file(path, sig, key.public_key(), digests)  # as minisign does: never write a signature that fails
        write_signature(path.with_name(path.name + SIG_SUFFIX), sig)
        log.info(f"{path}{SIG_SUFFIX}: signed by key {key.public_key().id} ({sig.trusted_comment})")
    print(key.public_key().to_base64())
    return 0
