"""A local HTTP server for download tests: 127.0.0.1 only, files from a dict, ETag, Range and If-Range,
and responses cut short on demand (the way a dropped connection looks to the client)."""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
from collections.abc import Iterator


class Server(http.server.ThreadingHTTPServer):
    """Files from a dict, with ETag, Range and If-Range; ``cut`` sends only that many bytes of the next response."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []  # (path, Range, If-Range)
        self.cut: dict[str, int] = {}
        self.no_length: set[str] = set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def put(self, path: str, data: bytes) -> None:
        self.files[path] = data
        self.etags[path] = f'"{hash(data) & 0xFFFFFFFF:08x}"'


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range"), self.headers.get("If-Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if_range = self.headers.get("If-Range")
        if m and (if_range is None or if_range == srv.etags[self.path]):
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("ETag", srv.etags[self.path])
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if self.path not in srv.no_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.cut.pop(self.path, None)
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True


@contextlib.contextmanager
def serve() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
