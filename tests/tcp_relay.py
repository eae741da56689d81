"""A broker address that is unreachable until a test opens it: a client bootstrapped at
`relay.address` cannot reach Kafka (nothing listens there) until `relay.open()` starts
forwarding that port to the real broker. librdkafka then learns the broker's advertised
address from the metadata and connects to it directly, so this models a broker that was
unreachable for a while (a blip) as seen by that one client."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.conftest import free_port


class TcpRelay:
    def __init__(self, target: str):
        host, port = target.split(",")[0].rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._closed = threading.Event()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
