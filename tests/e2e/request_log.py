"""A TCP proxy in front of the test S3 server that logs the HTTP requests passing through it.

Each Ray node of a loopback cluster gets its own proxy (its own ``AWS_ENDPOINT_URL``), so the
proxy's log is that node's traffic: the server side of "one model download per node".  Only
request heads are parsed: the traffic these tests send through it (HEAD, GET, list) has no
request bodies.
"""
from __future__ import annotations

import re
import socket
import threading
from contextlib import closing

_REQUEST = re.compile(rb"^(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.[01]\r\n(.*?)\r\n\r\n", re.S | re.M)
_RANGE = re.compile(rb"^range: *bytes=(\d+)-", re.I | re.M)


class LoggingProxy:
    """Forwards 127.0.0.1:<port> to ``target`` (host, port); ``requests`` lists (method, path, range start)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.requests: list[tuple[str, str, int | None]] = []
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def downloads(self, path_suffix: str) -> int:
        """GETs of an object whose path ends with ``path_suffix`` that start at byte 0 (one per
        whole-file download; later ranges of the same download start further in)."""
        with self._lock:
            return sum(1 for method, path, start in self.requests
                       if method == "GET" and path.split("?")[0].endswith(path_suffix) and not start)

    def close(self) -> None:
        with closing(self._server):
            pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _requests(self, source: socket.socket, sink: socket.socket) -> None:
        pending = b""
        while True:
            data = self._recv(source)
            if not data:
                break
            pending += data
            while (match := _REQUEST.search(pending)) is not None:
                start = _RANGE.search(match.group(3))
                with self._lock:
                    self.requests.append((match.group(1).decode(), match.group(2).decode(),
                                          int(start.group(1)) if start else None))
                pending = pending[match.end():]
            try:
                sink.sendall(data)
            except OSError:
                break
        self._close(source, sink)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while data := self._recv(source):
            try:
                sink.sendall(data)
            except OSError:
                break
        self._close(source, sink)

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(1 << 16)
        except OSError:
            return b""

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
