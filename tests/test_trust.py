"""install / verify with a pinned key or sha256, and install from a URL (a local HTTP server on 127.0.0.1 only).

The archives are real (py7zr, real ocloc images, test_install's fixtures); keys are generated here or by the real
minisign. "Nothing changed" is checked on the files themselves, and "before reading any entry" by watching the
archive reader.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from httpserver import Server, serve
from libfixtures import make_archive, site  # noqa: E402 - the release and settings fixtures are in conftest
from libfixtures import ocloc_ids as ids  # noqa: E402

from ipex_aot import archive as archive_mod
from ipex_aot import download, install, signing
from ipex_aot.errors import DownloadError, SignatureError

PVC = "pvc"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def key():
    return signing.SecretKey.generate()


@pytest.fixture
def signed(tmp_path, release, key):  # noqa: F811
    """A copy of the release archive with its signature beside it."""
    archive = tmp_path / "rel" / "0.1.0-AOT.7z"
    archive.parent.mkdir()
    shutil.copy(release[0], archive)
    signing.write_signature(archive.with_name(archive.name + ".minisig"), signing.sign_file(archive, key))
    return archive


def run_cli(*args: str, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("IPEX_AOT_")}
    full.update(IPEX_AOT_CACHE=str(cache), **env)
    return subprocess.run([sys.executable, "-m", "ipex_aot", *args], capture_output=True, text=True, env=full)


def errors(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


# --- install and verify from a file ---------------------------------------------------------

def test_install_trust_key_installs_a_signed_archive(tmp_path, settings, release, signed, key):  # noqa: F811
    root, lib = site(tmp_path)
    pvc = ids(PVC)[0]
    proc = run_cli("install", str(signed), "--ipex-dir", str(root), "--generation", pvc,
                   "--trust-key", key.public_key().to_base64(), cache=settings.cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert f"signed by the trusted key {key.public_key().id}" in proc.stderr
    assert "only the archive's own hashes" not in proc.stderr
    assert lib.read_bytes() == release[1][pvc].read_bytes()


def test_without_a_pinned_key_it_says_only_the_inner_hashes_were_checked(tmp_path, settings, signed):  # noqa: F811
    root, _ = site(tmp_path)
    proc = run_cli("install", str(signed), "--ipex-dir", str(root), "--generation", ids(PVC)[0],
                   cache=settings.cache_dir)
    assert proc.returncode == 0, proc.stderr
    warning = next(line for line in proc.stderr.splitlines() if line.startswith("warning:"))
    assert "no trusted key pinned" in warning and "only the archive's own hashes were checked" in warning
    assert "no key is pinned to check it against" in warning  # the .minisig beside it was not silently trusted


def refused_before_any_entry(tmp_path, settings, archive, monkeypatch, **trust_args):  # noqa: F811
    """install under TRUST_ARGS must raise SignatureError without reading an entry or changing a file."""
    root, lib = site(Path(tempfile.mkdtemp(dir=tmp_path)))
    before = snapshot(tmp_path)
    read: list[Path] = []
    real = archive_mod._entries  # what lists an archive's entries, for install and verify alike
    monkeypatch.setattr(archive_mod, "_entries", lambda a: read.append(a) or real(a))
    trust = signing.resolve_trust(settings, key_dirs=install.app_key_dirs(root), **trust_args)
    with pytest.raises(SignatureError) as e:
        install.install(archive, settings, ipex_dir=root, generation=ids(PVC)[0], trust=trust)
    assert read == [], "an entry was read before the signature check"
    assert snapshot(tmp_path) == before
    archive_mod.check_entries(archive)  # the spy sees a read when there is one
    assert read == [archive]
    return e.value.message


def test_repacked_archive_with_a_consistent_manifest_is_refused(tmp_path, settings, release, signed, key,  # noqa: F811
                                                                 monkeypatch):
    """Someone re-packs the archive with their own library and a manifest that agrees with it."""
    pvc = ids(PVC)[0]
    evil_lib = tmp_path / "evil" / "libgpu.so"
    evil_lib.parent.mkdir()
    evil_lib.write_bytes(release[1][pvc].read_bytes() + b"\0payload")
    repacked = make_archive(tmp_path / "repacked.7z", {pvc: evil_lib})
    # Its own hashes are consistent: without a pin it would pass the manifest check.
    assert archive_mod.open_archive(repacked).manifest["folders"][pvc]["sha256"] == signing.file_digests(evil_lib).sha256
    pub = key.public_key().to_base64()
    message = refused_before_any_entry(tmp_path, settings, repacked, monkeypatch, trust_key=pub)
    assert "no such signature file" in message and "nothing was changed" in message
    # ... and with the genuine archive's signature put beside it.
    shutil.copy(signed.with_name(signed.name + ".minisig"), repacked.with_name(repacked.name + ".minisig"))
    message = refused_before_any_entry(tmp_path, settings, repacked, monkeypatch, trust_key=pub)
    assert "does not match the file" in message


def test_a_signature_by_another_key_is_refused(tmp_path, settings, signed, monkeypatch):  # noqa: F811
    other = signing.SecretKey.generate().public_key()
    message = refused_before_any_entry(tmp_path, settings, signed, monkeypatch, trust_key=other.to_base64())
    assert f"not by the trusted key {other.id}" in message


def test_a_tampered_archive_is_refused_with_nothing_changed(tmp_path, settings, signed, key, monkeypatch):  # noqa: F811
    data = bytearray(signed.read_bytes())
    data[len(data) // 2] ^= 0x01
    signed.write_bytes(bytes(data))
    message = refused_before_any_entry(tmp_path, settings, signed, monkeypatch, trust_key=key.public_key().to_base64())
    assert "the file was changed after signing" in message


def test_cli_refusal_is_exit_9_with_one_line(tmp_path, settings, signed):  # noqa: F811
    root, lib = site(tmp_path)
    before = snapshot(tmp_path)
    other = signing.SecretKey.generate().public_key().to_base64()
    proc = run_cli("install", str(signed), "--ipex-dir", str(root), "--generation", ids(PVC)[0],
                   "--trust-key", other, cache=settings.cache_dir)
    assert proc.returncode == 9
    assert len(errors(proc)) == 1 and "nothing was changed" in errors(proc)[0]
    assert snapshot(tmp_path) == before


def test_sha256_pin(tmp_path, settings, release, signed, monkeypatch):  # noqa: F811
    digest = signing.file_digests(signed).sha256
    message = refused_before_any_entry(tmp_path, settings, signed, monkeypatch, sha256="0" * 64)
    assert f"sha256 {digest} is not the pinned {'0' * 64}" in message
    root, lib = site(tmp_path / "ok")
    proc = run_cli("install", str(signed), "--ipex-dir", str(root), "--generation", ids(PVC)[0],
                   "--sha256", f"sha256:{digest.upper()}", cache=settings.cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "sha256 matches --sha256" in proc.stderr and "warning" not in proc.stderr
    proc = run_cli("install", str(signed), "--ipex-dir", str(root), "--sha256", "abc", cache=settings.cache_dir)
    assert proc.returncode == 2 and "64 hexadecimal digits" in errors(proc)[0]


def test_the_key_file_an_app_ships_and_the_environment(tmp_path, settings, signed, key, monkeypatch):  # noqa: F811
    root, lib = site(tmp_path)
    (root / signing.TRUST_KEY_FILE).write_text(key.public_key().to_text())
    (root / "ipex_aot_fixture" / "__init__.py").write_text("")
    # Found from --ipex-dir given as the app folder or as the package folder itself.
    assert install.app_key_dirs(root) == install.app_key_dirs(root / "ipex_aot_fixture") == [root]
    pvc = ids(PVC)[0]
    proc = run_cli("install", str(signed), "--ipex-dir", str(root / "ipex_aot_fixture"), "--generation", pvc,
                   cache=settings.cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert f"signed by the trusted key {key.public_key().id}" in proc.stderr
    signed.with_name(signed.name + ".minisig").unlink()
    before = snapshot(tmp_path)
    proc = run_cli("install", str(signed), "--ipex-dir", str(root), "--generation", pvc, cache=settings.cache_dir)
    assert proc.returncode == 9 and "refused under the pinned key" in errors(proc)[0]
    assert snapshot(tmp_path) == before
    # IPEX_AOT_TRUST_KEY (a key file here) wins over the app's file, and refuses the unsigned archive too.
    other = tmp_path / "other.pub"
    other.write_text(signing.SecretKey.generate().public_key().to_text())
    proc = run_cli("verify", str(signed), cache=settings.cache_dir, IPEX_AOT_TRUST_KEY=str(other))
    assert proc.returncode == 9 and str(signed.name) in errors(proc)[0]


def test_verify_archive_with_trust_key_and_minisign_signature(tmp_path, settings, signed):  # noqa: F811
    """The project's verify takes a signature made by the real minisign."""
    proc = subprocess.run(["minisign", "-G", "-W", "-p", str(tmp_path / "m.pub"), "-s", str(tmp_path / "m.key")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(["minisign", "-S", "-s", str(tmp_path / "m.key"), "-m", str(signed)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("verify", str(signed), "--trust-key", str(tmp_path / "m.pub"), cache=settings.cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "signed by the trusted key" in proc.stderr and proc.stdout.count("ok ") == 2
    proc = run_cli("verify", "canary", "--trust-key", str(tmp_path / "m.pub"), cache=settings.cache_dir)
    assert proc.returncode == 2 and "not a build folder" in errors(proc)[0]


# --- downloads --------------------------------------------------------------------------------

@pytest.fixture
def server():
    with serve() as srv:
        yield srv


def publish(server: Server, archive: Path, with_signature: bool = True) -> str:
    server.put("/download/v0.1.0/0.1.0-AOT.7z", archive.read_bytes())
    if with_signature:
        server.put("/download/v0.1.0/0.1.0-AOT.7z.minisig", archive.with_name(archive.name + ".minisig").read_bytes())
    return server.url("/download/v0.1.0/0.1.0-AOT.7z")


def test_install_from_a_url_downloads_checks_and_installs(tmp_path, settings, release, signed, key, server):  # noqa: F811
    url = publish(server, signed)
    root, lib = site(tmp_path)
    downloads = tmp_path / "downloads"
    pvc = ids(PVC)[0]
    proc = run_cli("install", url, "--ipex-dir", str(root), "--generation", pvc, "--download-dir", str(downloads),
                   "--trust-key", key.public_key().to_base64(), cache=settings.cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert lib.read_bytes() == release[1][pvc].read_bytes()
    assert sorted(p.name for p in downloads.iterdir()) == ["0.1.0-AOT.7z", "0.1.0-AOT.7z.minisig"]
    assert (downloads / "0.1.0-AOT.7z").read_bytes() == signed.read_bytes()
    # The signature is fetched first, so an unsigned release is refused before its download.
    assert [r[0] for r in server.requests] == ["/download/v0.1.0/0.1.0-AOT.7z.minisig", "/download/v0.1.0/0.1.0-AOT.7z"]
    assert re.search(r"download 0\.1\.0-AOT\.7z: \d+/\d+ \(100%\)", proc.stderr)
    # The same command again reuses the checked download.
    proc = run_cli("install", url, "--ipex-dir", str(root), "--generation", pvc, "--download-dir", str(downloads),
                   "--trust-key", key.public_key().to_base64(), cache=settings.cache_dir)
    assert proc.returncode == 0 and "(downloaded before)" in proc.stderr
    assert [r[0] for r in server.requests].count("/download/v0.1.0/0.1.0-AOT.7z") == 1


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path, signed, key, server):
    url = publish(server, signed)
    size = signed.stat().st_size
    server.cut["/download/v0.1.0/0.1.0-AOT.7z"] = size // 3
    trust = signing.Trust(key.public_key())
    path, checked = download.fetch_archive(url, tmp_path / "dl", trust, pause=0)
    assert path.read_bytes() == signed.read_bytes() and "signed by the trusted key" in checked
    archive_requests = [r for r in server.requests if r[0].endswith(".7z")]
    etag = server.etags["/download/v0.1.0/0.1.0-AOT.7z"]
    assert archive_requests == [(archive_requests[0][0], None, None),
                                (archive_requests[0][0], f"bytes={size // 3}-", etag)]
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["0.1.0-AOT.7z", "0.1.0-AOT.7z.minisig"]


def test_a_download_cut_in_one_run_resumes_in_the_next(tmp_path, settings, signed, key, server):  # noqa: F811
    url = publish(server, signed)
    size = signed.stat().st_size
    server.cut["/download/v0.1.0/0.1.0-AOT.7z"] = size // 2
    trust = signing.Trust(key.public_key())
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download.fetch_archive(url, tmp_path / "dl", trust, retries=0)
    part = tmp_path / "dl" / "0.1.0-AOT.7z.part"
    assert part.stat().st_size == size // 2 and not (tmp_path / "dl" / "0.1.0-AOT.7z").exists()
    # The file changed on the server meanwhile: If-Range no longer matches, so the whole new file comes.
    server.put("/download/v0.1.0/0.1.0-AOT.7z", signed.read_bytes())
    server.etags["/download/v0.1.0/0.1.0-AOT.7z"] = '"changed"'
    server.cut["/download/v0.1.0/0.1.0-AOT.7z"] = size // 4
    with pytest.raises(DownloadError):
        download.fetch_archive(url, tmp_path / "dl", trust, retries=0)
    assert part.stat().st_size == size // 4
    path, _ = download.fetch_archive(url, tmp_path / "dl", trust, retries=0)
    assert path.read_bytes() == signed.read_bytes() and not part.exists()
    ranges = [r[1] for r in server.requests if r[0].endswith(".7z")]
    assert ranges == [None, f"bytes={size // 2}-", f"bytes={size // 4}-"]


def test_unsigned_tampered_and_oversized_downloads_are_refused(tmp_path, settings, signed, key, server):  # noqa: F811
    trust = signing.Trust(key.public_key())
    url = publish(server, signed, with_signature=False)
    with pytest.raises(SignatureError, match="no signature at .*nothing was downloaded"):
        download.fetch_archive(url, tmp_path / "dl", trust)
    assert [r[0] for r in server.requests] == ["/download/v0.1.0/0.1.0-AOT.7z.minisig"]
    # Tampered bytes with the genuine signature: downloaded, refused, and not kept to be resumed.
    url = publish(server, signed)
    data = bytearray(signed.read_bytes())
    data[100] ^= 0xFF
    server.put("/download/v0.1.0/0.1.0-AOT.7z", bytes(data))
    with pytest.raises(SignatureError, match="changed after signing"):
        download.fetch_archive(url, tmp_path / "dl", trust)
    assert list((tmp_path / "dl").iterdir()) == []
    # Larger than --max-download: refused from Content-Length, before any byte is written.
    server.put("/download/v0.1.0/0.1.0-AOT.7z", signed.read_bytes())
    with pytest.raises(DownloadError, match="more than the limit"):
        download.fetch_archive(url, tmp_path / "dl", trust, max_size=1000)
    # No Content-Length: the cap still stops the stream.
    server.no_length.add("/download/v0.1.0/0.1.0-AOT.7z")
    with pytest.raises(DownloadError, match="allowed"):
        download.fetch_archive(url, tmp_path / "dl", trust, max_size=1000)
    assert list((tmp_path / "dl").iterdir()) == []
    with pytest.raises(DownloadError, match="HTTP 404"):
        download.fetch_archive(server.url("/nothing/here.7z"), tmp_path / "dl", signing.Trust())
    with pytest.raises(DownloadError, match="file name"):
        download.archive_name(server.url("/download/"))


def test_app_key_dirs_for_an_app_folder(tmp_path):
    """--app: the folder under the app that holds intel_extension_for_pytorch, then the app folder itself."""
    app = tmp_path / "Demucs-GUI"
    package = app / "Lib" / "site-packages" / "intel_extension_for_pytorch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert install.app_key_dirs(None, app) == [package.parent, app]
    assert install.app_key_dirs(None, tmp_path / "empty-app") == [tmp_path / "empty-app"]
