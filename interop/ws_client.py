#!/usr/bin/env python3
"""WebSocket eyeball for the cloudflared interop check: upgrades through the emulator's plain
listener, sends one text and one binary frame, and checks that both come back unchanged.
Usage: ws_client.py HOST PORT HOSTHEADER. Exit 0 on success."""
import base64
import os
import socket
import sys


def frame(opcode, data):
    mask = os.urandom(4)
    n = len(data)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def read_frame(sock):
    head = read_exact(sock, 2)
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(read_exact(sock, 2), "big")
    return head[0] & 0x0F, read_exact(sock, n)


def main():
    host, port, host_header = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sock = socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += read_exact(sock, 1)
    status = head.split(b"\r\n")[0]
    print(head.decode(errors="replace").strip())
    if b" 101 " not in status + b" ":
        print("not upgraded:", status)
        return 1
    for opcode, data in ((1, b"hello through the tunnel"), (2, bytes(range(256)) * 4)):
        sock.sendall(frame(opcode, data))
        got = read_frame(sock)
        if got != (opcode, data):
            print("echo mismatch for opcode", opcode, got[0], len(got[1]))
            return 1
        print(f"echo ok: opcode {opcode}, {len(data)} bytes")
    sock.sendall(frame(8, b"\x03\xe8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
