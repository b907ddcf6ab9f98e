"""A local HTTP endpoint for the tests of HTTP clients (the OpenAI-compatible judge and VLM engines): the server,
its thread and its URL; the fake servers built on it say only how they answer a POST."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalHTTPServer:
    """A threaded HTTP server on a free port of 127.0.0.1 that answers each POST with `on_post(handler, JSON body)`;
    `url` is its OpenAI-style base URL (.../v1)."""

    def __init__(self, on_post: Callable[[BaseHTTPRequestHandler, dict], None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                on_post(self, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
    """Writes `payload` as the JSON reply with `status`; a client that has gone (it gave up waiting) is no error."""
    data = json.dumps(payload).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
