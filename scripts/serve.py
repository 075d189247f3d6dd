#!/usr/bin/env python3
"""Static file server with the headers the engine's pages need.

    python3 scripts/serve.py [PORT] [DIR] [--log FILE]

Sends Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp
(cross-origin isolation: SharedArrayBuffer, wasm threads), Cross-Origin-Resource-Policy, serves
.wasm as application/wasm and .mjs/.js as JavaScript, and binds to 127.0.0.1 only. PORT 0 picks a
free port; the chosen one is printed as "serving http://127.0.0.1:PORT/" (flushed) so a test can
read it. With --log, every request line ("GET /path") is appended to FILE.
"""

import functools
import http.server
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    log_file = None

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, fmt, *args):
        if self.log_file:
            with open(self.log_file, "a", encoding="utf-8") as f:
                f.write(f"{self.command} {self.path}\n")


Handler.extensions_map = {
    **Handler.extensions_map,
    ".wasm": "application/wasm",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
}


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    log = None
    if "--log" in argv:
        i = argv.index("--log")
        log = argv[i + 1]
        args = [a for a in args if a != log]
    port = int(args[0]) if args else 8080
    directory = args[1] if len(args) > 1 else "."
    Handler.log_file = log
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=directory))
    print(f"serving http://127.0.0.1:{server.server_address[1]}/ from {directory}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
