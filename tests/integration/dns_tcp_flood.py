#!/usr/bin/python3
"""A TCP client that pipelines DNS queries and never reads the answers:
`dns_tcp_flood.py PORT NAME MEGABYTES` sends up to MEGABYTES of queries for
NAME (A) on one connection, for at most 5 s, then prints how many bytes the
server took before it stopped reading, and keeps the connection open (not
reading) until stdin closes."""
import socket
import struct
import sys
import time

port, name, mb = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.settimeout(0.5)
chunk = bytearray()
for i in range(1000):
    msg = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    chunk += struct.pack(">H", len(msg)) + msg
sent, deadline = 0, time.monotonic() + 5
while sent < mb * 1024 * 1024 and time.monotonic() < deadline:
    try:
        sent += s.send(chunk)
    except socket.timeout:
        break  # the server stopped reading: what it should do
print(sent, flush=True)
sys.stdin.read()
s.close()
