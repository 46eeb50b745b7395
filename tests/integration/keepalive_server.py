#!/usr/bin/python3
"""An HTTP/1.1 origin that keeps connections open (hello closes each), for
jitsu-http's upstream pool: `keepalive_server.py PORT` serves "keep-alive"
on 127.0.0.1:PORT until killed; /headers answers with the request's header
fields, /conn names a field of its answer in Connection."""
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"keep-alive\n"
        if self.path == "/headers":  # what the proxy forwarded, one per line
            body = "".join("%s: %s\n" % (k, v) for k, v in self.headers.items()).encode()
        self.send_response(200)
        if self.path == "/conn":  # a field meant for the proxy alone
            self.send_header("Connection", "X-Private")
            self.send_header("X-Private", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
