"""A server with nothing but ``socket``: it never imports ``threading`` before it listens.

Listens, says so, keeps listening for the seconds given, then exits normally.
"""

import socket
import sys
import time

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print("listening", flush=True)
time.sleep(float(sys.argv[1]))
server.close()
print("exiting", flush=True)
