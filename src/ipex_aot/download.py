"""Release archives fetched by URL for ``install``: resumable, size-limited, checked before use.

The archive goes to ``<download dir>/<name>.part`` (the download folder is
``--download-dir``, by default the cache's ``downloads/``), with the
server's validator (ETag or Last-Modified) in ``<name>.part.json``. A cut
connection is resumed with an HTTP Range request (``If-Range`` makes a server
whose file changed send the whole new file instead of a tail that does not
fit), a few times in one run and again on the next run. The size the server
announces (Content-Length, or the total of Content-Range) bounds what is
read, and so does a cap (``--max-download``, 8 GiB by default: the
established archives are about 320 MB). Only after the whole file passed
:func:`ipex_aot.signing.check_archive` (signature under a pinned key, pinned
sha256) is it renamed to ``<name>``; a file that fails is deleted, since
resuming it could only give the same bytes.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ipex_aot import __version__, log
from ipex_aot.errors import DownloadError, IpexAotError, SignatureError
from ipex_aot.fsutil import CHUNK, read_json, write_json, write_text
from ipex_aot.signing import MAX_SIGNATURE_BYTES, SIG_SUFFIX, Trust, check_archive

#: Far above any real release (about 320 MB today), far below a disk-filling stream.
MAX_DOWNLOAD = 8 << 30
RETRIES = 3
TIMEOUT = 60
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def is_url(text: str | os.PathLike[str]) -> bool:
    return str(text).startswith(("http://", "https://"))


def archive_name(url: str) -> str:
    """The file name a URL names: its last path segment, which must be a plain file name."""
    path = urllib.parse.urlsplit(url).path
    name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise DownloadError(f"{url}: does not end in a file name; give the archive's own URL")
    return name


@dataclass
class _State:
    url: str
    validator: str | None = None
    total: int | None = None


def _open(url: str, headers: dict[str, str], timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"ipex-aot/{__version__}", "Accept-Encoding": "identity", **headers}
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)  # noqa: S310


def fetch_small(url: str, limit: int = MAX_SIGNATURE_BYTES, timeout: float = TIMEOUT) -> bytes | None:
    """A small file (a signature) in memory; None when the server has none (404)."""
    try:
        with _open(url, {}, timeout) as resp:
            data = resp.read(limit + 1)
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            return None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: {_why(e)}") from None
    if len(data) > limit:
        raise SignatureError(f"{url}: more than {limit // 1024} KiB; not a minisign signature")
    return data


def _why(e: BaseException) -> str:
    reason = getattr(e, "reason", None)
    return str(reason or e) or type(e).__name__


def _parse_total(resp: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """(where this response starts, the whole file's size or None) from its status and headers."""
    if resp.status == 206:
        m = _CONTENT_RANGE.fullmatch((resp.headers.get("Content-Range") or "").strip())
        if not m:
            raise DownloadError(f"partial response without a usable Content-Range ({resp.headers.get('Content-Range')!r})")
        start = int(m.group(1))
        if start != offset:
            raise DownloadError(f"asked for bytes from {offset}, the server sent bytes from {start}")
        return start, None if m.group(3) == "*" else int(m.group(3))
    length = resp.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def download(url: str, part: Path, *, max_size: int = MAX_DOWNLOAD, retries: int = RETRIES,
             timeout: float = TIMEOUT, pause: float = 1.0) -> Path:
    """Download URL into PART, resuming what an earlier run left there; returns PART, complete.

    DownloadError when the server announces or sends more than MAX_SIZE (or
    more than it announced), or when the connection keeps failing (the part
    is then kept for the next run).
    """
    state_path = part.with_name(part.name + ".json")
    state = _State(url)
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        saved = read_json(state_path)
        if saved["url"] == url:
            state = _State(url, saved.get("validator"), saved.get("total"))
    if state.validator is None and part.exists():
        part.unlink()  # bytes of unknown origin: never append to them
    failures = 0
    progress: log.Progress | None = None
    while True:
        offset = part.stat().st_size if part.exists() else 0
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if state.validator:
                headers["If-Range"] = state.validator
        done = offset
        try:
            with _open(url, headers, timeout) as resp:
                start, total = _parse_total(resp, offset)
                if start == 0 and offset:
                    log.info(f"{url}: the server sent the whole file (it changed, or it cannot resume); starting over")
                if total is not None and total > max_size:
                    raise DownloadError(f"{url}: the server announces {total:,} bytes, more than the limit "
                                        f"{max_size:,} (--max-download); refusing it")
                limit = total if total is not None else max_size
                state.validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
                state.total = total
                write_json(state_path, {"url": url, "validator": state.validator, "total": total})
                if progress is None or start == 0:
                    progress = log.Progress(f"download {part.name[:-5] if part.name.endswith('.part') else part.name}",
                                            limit)
                    progress.done = start
                done = start
                with open(part, "r+b" if start else "wb") as f:
                    f.seek(start)
                    f.truncate()
                    while chunk := resp.read(min(CHUNK, limit - done + 1)):
                        done += len(chunk)
                        if done > limit:
                            raise DownloadError(f"{url}: the server sent more than the {limit:,} bytes "
                                                f"{'it announced' if total is not None else 'allowed (--max-download)'}")
                        f.write(chunk)
                        progress.advance(len(chunk), note=f"{done / 1e6:,.1f} MB")
                if total is not None and done < total:
                    raise http.client.IncompleteRead(b"", total - done)
        except DownloadError:
            _discard(part)  # bytes past a limit, or a tail that does not fit: nothing worth resuming
            raise
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                # Nothing left to send from our offset: the file is shorter than what we hold, so it changed.
                log.info(f"{url}: the server cannot resume from byte {offset:,}; starting over")
                part.unlink(missing_ok=True)
                failures += 1
                if failures > retries:
                    raise DownloadError(f"{url}: HTTP 416 again after starting over") from None
                continue
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            failures += 1
            if failures > retries:
                raise DownloadError(f"{url}: {_why(e)} after {retries} retries; {done:,} bytes are kept in {part}, "
                                    "run the same command again to resume") from None
            log.warn(f"download cut at {done:,} bytes ({_why(e)}); resuming ({failures}/{retries})")
            time.sleep(pause * failures)
            continue
        return part


def fetch_archive(url: str, folder: Path, trust: Trust, *, max_size: int = MAX_DOWNLOAD,
                  retries: int = RETRIES, pause: float = 1.0) -> tuple[Path, str]:
    """Download URL into FOLDER, check it against TRUST, rename it into place: (the archive, what was checked).

    Under a pinned key the signature is ``URL.minisig`` (unless TRUST names a
    local signature file); it is fetched first, so an unsigned release costs
    no download at all.
    """
    name = archive_name(url)
    folder.mkdir(parents=True, exist_ok=True)
    target, part = folder / name, folder / f"{name}.part"
    signature_text = None
    if trust.key is not None and trust.signature is None:
        raw = fetch_small(url + SIG_SUFFIX)
        if raw is None:
            raise SignatureError(f"{url}: no signature at {url}{SIG_SUFFIX}; an unsigned archive is refused under the "
                                 f"pinned key {trust.key.id}, nothing was downloaded or changed")
        try:
            signature_text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError(f"{url}{SIG_SUFFIX}: not UTF-8 text; not a minisign signature") from None
    if target.is_file() and trust.pinned:
        # An earlier run's download: reused only when what the user pinned vouches for it.
        try:
            return target, check_archive(target, trust, signature_text=signature_text) + " (downloaded before)"
        except SignatureError:
            log.info(f"{target} from an earlier download does not pass the check; downloading it again")
    download(url, part, max_size=max_size, retries=retries, pause=pause)
    try:
        checked = check_archive(part, trust, signature_text=signature_text).replace(part.name, name, 1)
    except IpexAotError:
        _discard(part)
        raise
    os.replace(part, target)
    part.with_name(part.name + ".json").unlink(missing_ok=True)
    sig_path = target.with_name(target.name + SIG_SUFFIX)
    if signature_text is not None:
        write_text(sig_path, signature_text)  # beside the archive, for `minisign -V` or a later verify
    else:
        sig_path.unlink(missing_ok=True)
    return target, checked


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".json").unlink(missing_ok=True)
