"""Listens on two TCP sockets, prints ``listening PID``, then sleeps: the smallest server."""

import os
import socket
import time

sockets = []
for _ in range(2):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sockets.append(sock)
print("listening", os.getpid(), flush=True)
time.sleep(3600)
