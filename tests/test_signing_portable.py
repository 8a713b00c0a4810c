"""Signing, the check before install, and resumable downloads with nothing but Python: the Windows lane runs these.

The interop with the real minisign is in test_signing.py (Linux: Debian's minisign); here the same code paths run
under whichever CPython runs pytest, Windows' included, where users install: key files written and read back,
signatures refused, a download cut and resumed through a local server on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from httpserver import serve

from ipex_aot import cli, download, signing
from ipex_aot.errors import DownloadError, SignatureError
from ipex_aot.settings import Settings


@pytest.fixture
def archive(tmp_path) -> Path:
    path = tmp_path / "rel" / "2.1.40+xpu-AOT.7z"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 3001)
    return path


def test_keygen_sign_and_check_through_the_cli(tmp_path, archive, capsys, monkeypatch):
    pub, key = tmp_path / "k.pub", tmp_path / "k.key"
    monkeypatch.setenv("IPEX_AOT_SIGN_PASSWORD", "pässword")
    # minisign's own scrypt limits would take 1 GiB; small ones (stored in the key file) keep this quick.
    secret = signing.SecretKey.generate()
    key.write_text(secret.to_text("pässword", opslimit=32768, memlimit=16 << 20))
    pub.write_text(secret.public_key().to_text())
    assert cli.main(["sign", str(archive), "-s", str(key)]) == 0
    assert capsys.readouterr().out.strip() == secret.public_key().to_base64()
    trust = signing.resolve_trust(Settings.from_env({}), trust_key=str(pub))
    assert "signed by the trusted key" in signing.check_archive(archive, trust)
    assert cli.main(["keygen", "-W", "-p", str(tmp_path / "w.pub"), "-s", str(tmp_path / "w.key")]) == 0
    assert signing.load_secret_key(Settings.from_env({"IPEX_AOT_SIGN_KEY_FILE": str(tmp_path / "w.key")})) is not None


def test_refusals(tmp_path, archive):
    key = signing.SecretKey.generate()
    sig_path = archive.with_name(archive.name + ".minisig")
    trust = signing.Trust(key.public_key())
    with pytest.raises(SignatureError, match="no such signature file"):
        signing.check_archive(archive, trust)
    signing.write_signature(sig_path, signing.sign_file(archive, signing.SecretKey.generate()))
    with pytest.raises(SignatureError, match="not by the trusted key"):
        signing.check_archive(archive, trust)
    signing.write_signature(sig_path, signing.sign_file(archive, key))
    data = bytearray(archive.read_bytes())
    data[7] ^= 1
    archive.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="changed after signing"):
        signing.check_archive(archive, trust)
    with pytest.raises(SignatureError, match="is not the pinned"):
        signing.check_archive(archive, signing.Trust(sha256="0" * 64))
    unpinned = signing.check_archive(archive, signing.Trust())
    assert "only the archive's own hashes were checked" in unpinned


def test_download_resumes_after_a_cut_and_renames_only_a_checked_file(tmp_path, archive):
    key = signing.SecretKey.generate()
    signing.write_signature(archive.with_name(archive.name + ".minisig"), signing.sign_file(archive, key))
    with serve() as srv:
        srv.put("/r/a.7z", archive.read_bytes())
        srv.put("/r/a.7z.minisig", archive.with_name(archive.name + ".minisig").read_bytes())
        size = archive.stat().st_size
        srv.cut["/r/a.7z"] = size // 3
        with pytest.raises(DownloadError, match="resume"):
            download.fetch_archive(srv.url("/r/a.7z"), tmp_path / "dl", signing.Trust(key.public_key()), retries=0)
        assert (tmp_path / "dl" / "a.7z.part").stat().st_size == size // 3
        path, checked = download.fetch_archive(srv.url("/r/a.7z"), tmp_path / "dl", signing.Trust(key.public_key()))
        assert path.read_bytes() == archive.read_bytes() and "signed by the trusted key" in checked
        assert [r[1] for r in srv.requests if r[0] == "/r/a.7z"] == [None, f"bytes={size // 3}-"]
        assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["a.7z", "a.7z.minisig"]
