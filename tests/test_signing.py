"""minisign-format keys and signatures, checked both ways against Debian's real `minisign` (setup.sh installs it).

Every key is generated here, by the project or by minisign itself; nothing is a hand-written sample.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ipex_aot import cli, signing
from ipex_aot.errors import SignatureError, UsageError
from ipex_aot.settings import Settings

PASSWORD = "corrėct horse"  # non-ASCII on purpose: minisign hashes the bytes as typed


def minisign(*args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # No skip when minisign is missing: the lane needs it, so a missing tool fails here.
    return subprocess.run(["minisign", *args], capture_output=True, text=True, input=input, cwd=cwd, check=False)


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


@pytest.fixture
def payload(tmp_path) -> Path:
    path = tmp_path / "2.1.40+xpu-AOT.7z"
    path.write_bytes(bytes(range(256)) * 4099)
    return path


@pytest.fixture(scope="module")
def minisign_key(tmp_path_factory) -> tuple[Path, Path]:
    """An unencrypted key pair made by minisign -G -W."""
    tmp = tmp_path_factory.mktemp("mkey")
    proc = minisign("-G", "-W", "-p", str(tmp / "m.pub"), "-s", str(tmp / "m.key"))
    assert proc.returncode == 0, proc.stderr
    return tmp / "m.pub", tmp / "m.key"


def test_minisign_verifies_what_keygen_and_sign_make(tmp_path, payload, capsys):
    pub, key = tmp_path / "k.pub", tmp_path / "k.key"
    assert cli.main(["keygen", "-W", "-p", str(pub), "-s", str(key)]) == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    line = capsys.readouterr().out.strip()
    assert line == pub.read_text().splitlines()[1]
    assert cli.main(["sign", str(payload), "-s", str(key)]) == 0
    sig_text = (tmp_path / (payload.name + ".minisig")).read_text()
    assert signing.Signature.parse(sig_text).algorithm == b"ED"  # prehashed, minisign's default
    proc = minisign("-V", "-H", "-m", str(payload), "-P", line)
    assert proc.returncode == 0, proc.stderr
    assert f"file:{payload.name}\thashed" in proc.stdout
    # ... and refuses the same signature once the file changed.
    with open(payload, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff")
    proc = minisign("-V", "-m", str(payload), "-P", line)
    assert proc.returncode != 0 and "Signature verification failed" in proc.stderr


def test_project_verifies_what_minisign_signs_both_algorithms(tmp_path, payload, minisign_key):
    pub_path, key_path = minisign_key
    public = signing.load_public_key(str(pub_path), "test")
    for legacy in (False, True):
        proc = minisign("-S", *(["-l"] if legacy else []), "-s", str(key_path), "-m", str(payload),
                        "-t", "release 2.1.40 ✓")
        assert proc.returncode == 0, proc.stderr
        sig = signing.read_signature(payload.with_name(payload.name + ".minisig"))
        assert sig.algorithm == (b"Ed" if legacy else b"ED")
        assert sig.trusted_comment == "release 2.1.40 ✓"
        signing.verify_file(payload, sig, public)
        tampered = tmp_path / "tampered"
        tampered.write_bytes(payload.read_bytes()[:-1] + b"\0")
        with pytest.raises(SignatureError, match="does not match the file"):
            signing.verify_file(tampered, sig, public)


def test_project_signs_with_a_key_minisign_made(payload, minisign_key):
    pub_path, key_path = minisign_key
    assert cli.main(["sign", str(payload), "-s", str(key_path), "-t", "made by ipex-aot"]) == 0
    proc = minisign("-V", "-H", "-m", str(payload), "-p", str(pub_path))
    assert proc.returncode == 0, proc.stderr
    assert "Trusted comment: made by ipex-aot" in proc.stdout


@pytest.mark.slow
def test_encrypted_key_from_minisign(tmp_path, payload, monkeypatch):
    """minisign's default key: scrypt with 1 GiB (opslimit 2^25, memlimit 2^30), read back here."""
    proc = minisign("-G", "-p", str(tmp_path / "e.pub"), "-s", str(tmp_path / "e.key"),
                    input=f"{PASSWORD}\n{PASSWORD}\n")
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("IPEX_AOT_SIGN_PASSWORD", PASSWORD)
    assert cli.main(["sign", str(payload), "-s", str(tmp_path / "e.key")]) == 0
    proc = minisign("-V", "-m", str(payload), "-p", str(tmp_path / "e.pub"))
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(UsageError, match="wrong password"):
        signing.load_secret_key(settings(IPEX_AOT_SIGN_PASSWORD="wrong"), tmp_path / "e.key")


def test_encrypted_key_from_the_project_works_in_minisign(tmp_path, payload):
    """Our scrypt encryption is minisign's: minisign decrypts our key with the password and signs.

    Small scrypt limits keep the test quick; minisign reads the limits from the key file.
    """
    key = signing.SecretKey.generate()
    key_path, pub_path = tmp_path / "ours.key", tmp_path / "ours.pub"
    key_path.write_text(key.to_text(PASSWORD, opslimit=32768, memlimit=16 << 20))
    pub_path.write_text(key.public_key().to_text())
    proc = minisign("-S", "-s", str(key_path), "-m", str(payload), input=f"{PASSWORD}\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert minisign("-V", "-m", str(payload), "-p", str(pub_path)).returncode == 0
    proc = minisign("-S", "-s", str(key_path), "-m", str(payload), input="not it\n")
    assert proc.returncode != 0 and "Wrong password" in proc.stdout + proc.stderr
    again = signing.SecretKey.parse(key_path.read_text(), PASSWORD)
    assert again == key


def test_minisign_default_scrypt_limits_give_its_parameters():
    # libsodium's pickparams for OPSLIMIT/MEMLIMIT_SENSITIVE: N = 2^20, r = 8, p = 1 (1 GiB).
    assert signing.scrypt_params(signing.OPSLIMIT, signing.MEMLIMIT) == (1 << 20, 8, 1)


def test_another_key_and_a_changed_trusted_comment_are_refused(tmp_path, payload, minisign_key):
    ours = signing.SecretKey.generate()
    theirs = signing.load_public_key(str(minisign_key[0]), "test")
    sig = signing.sign_file(payload, ours)
    with pytest.raises(SignatureError, match=f"signed by key {ours.public_key().id}, not by the trusted key {theirs.id}"):
        signing.verify_file(payload, sig, theirs)
    # A signature claiming the trusted key's id but made by another key fails on the signature itself.
    forged = signing.Signature(sig.algorithm, theirs.key_id, sig.signature, sig.trusted_comment, sig.global_signature)
    with pytest.raises(SignatureError, match="does not match"):
        signing.verify_file(payload, forged, theirs)
    retitled = signing.Signature(sig.algorithm, sig.key_id, sig.signature, "timestamp:0\tfile:other.7z",
                                 sig.global_signature)
    with pytest.raises(SignatureError, match="trusted comment"):
        signing.verify_file(payload, retitled, ours.public_key())
    sig_path = tmp_path / "retitled.minisig"
    sig_path.write_text(retitled.to_text())
    proc = minisign("-V", "-m", str(payload), "-x", str(sig_path), "-P", ours.public_key().to_base64())
    assert proc.returncode != 0 and "Comment signature verification failed" in proc.stderr


def test_keys_given_as_text_file_or_environment(tmp_path, minisign_key):
    pub_path, key_path = minisign_key
    line = pub_path.read_text().splitlines()[1]
    from_line, from_file = signing.load_public_key(line, "--trust-key"), signing.load_public_key(str(pub_path), "x")
    assert (from_line.key_id, from_line.key) == (from_file.key_id, from_file.key)
    assert from_line.id in pub_path.read_text()  # minisign's comment names the id the same way
    with pytest.raises(UsageError, match="neither a minisign public key"):
        signing.load_public_key(str(tmp_path / "missing.pub"), "--trust-key")
    with pytest.raises(UsageError, match="base64"):
        signing.load_public_key("RWQ" + "*" * 53, "--trust-key")
    secret_text = signing.load_secret_key(settings(IPEX_AOT_SIGN_KEY=key_path.read_text()))
    secret_file = signing.load_secret_key(settings(IPEX_AOT_SIGN_KEY_FILE=str(key_path)))
    assert secret_text == secret_file and secret_text is not None
    assert secret_text.public_key().to_base64() == line
    assert signing.load_secret_key(settings()) is None


def test_keygen_refuses_to_overwrite_and_needs_a_password(tmp_path, monkeypatch, capsys):
    pub, key = tmp_path / "k.pub", tmp_path / "k.key"
    assert cli.main(["keygen", "-W", "-p", str(pub), "-s", str(key)]) == 0
    before = key.read_bytes()
    assert cli.main(["keygen", "-W", "-p", str(pub), "-s", str(key)]) == 2
    assert key.read_bytes() == before
    monkeypatch.delenv("IPEX_AOT_SIGN_PASSWORD", raising=False)
    assert cli.main(["keygen", "-p", str(tmp_path / "b.pub"), "-s", str(tmp_path / "b.key")]) == 2
    assert "IPEX_AOT_SIGN_PASSWORD" in capsys.readouterr().err
    assert not (tmp_path / "b.key").exists()


def test_malformed_signatures_are_one_line_errors(tmp_path):
    for text in ("", "untrusted comment: x\nnot base64!\ntrusted comment: y\nAAAA\n",
                 "untrusted comment: x\n" + "A" * 100 + "\n"):
        with pytest.raises(SignatureError):
            signing.Signature.parse(text, "s.minisig")
    big = tmp_path / "big.minisig"
    big.write_bytes(b"x" * (signing.MAX_SIGNATURE_BYTES + 1))
    with pytest.raises(SignatureError, match="not a minisign signature"):
        signing.read_signature(big)


def test_key_id_is_printed_as_minisign_prints_it():
    # Captured from Debian's minisign 0.11: a key whose id is b'+]s\xf7\x1b\xccL\x00' was written with the
    # comment "minisign public key 4CCC1BF7735D2B" (printf %PRIX64: the leading zero byte is not shown).
    assert signing.key_id_hex(b"+]s\xf7\x1b\xccL\x00") == "4CCC1BF7735D2B"
