"""What a subprocess the app starts sees of the agent (for the shared-memory tests).

The child listens on a socket, which wakes the agent in it too, then reports its
pid, whether ``PILOTFISH_SHM`` is in its environment, and the agent's role in it.
"""

import json
import subprocess
import sys

CHILD = r"""
import json, os, socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
runtime = [m for n, m in list(sys.modules.items()) if n.endswith(".runtime") and hasattr(m, "DORMANT")]
print(json.dumps({
    "pid": os.getpid(),
    "PILOTFISH_SHM": os.environ.get("PILOTFISH_SHM"),
    "role": runtime[0].role() if runtime else None,
}))
"""


def run_child() -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout)
