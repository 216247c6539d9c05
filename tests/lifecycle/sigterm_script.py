"""A process that hands SIGTERM to pilotfish.offline's relay, for test_sigterm_relay.py.

Usage: python sigterm_script.py MODE QUIET. Prints one line per event, flushed, so the
test can read the order of events: READY, DRAINED, APP-HANDLER, EXIT.
"""

import os
import signal
import sys
import time

from pilotfish import offline, settings

mode, quiet = sys.argv[1], float(sys.argv[2])


def say(text):
    os.write(1, (text + "\n").encode())  # unbuffered: safe inside signal handlers


class Machine:
    def go_offline(self, reason):
        say("OFFLINE " + reason)

    def deregister(self):
        return "local"

    def drained(self, reason, detail):
        say("DRAINED")


class Totals:
    in_flight = 0
    requests_total = 0


current = settings.build({"offline_quiet_seconds": quiet, "offline_max_wait_seconds": 10.0}, {})
drainer = offline.Drainer(Machine(), Totals, lambda flag: None, lambda: current, poll=0.02)


def app_handler(signum, frame):
    say("APP-HANDLER")
    sys.exit(0)


if mode == "handler-before":
    signal.signal(signal.SIGTERM, app_handler)
relay = offline.install_sigterm(drainer)
say("RELAY %s" % (relay is not None))
if mode in ("handler-after", "second-sigterm"):
    previous = signal.signal(signal.SIGTERM, app_handler)
    say("PREVIOUS-IS-DEFAULT %s" % (previous is signal.SIG_DFL))
    say("GETSIGNAL-IS-APP %s" % (signal.getsignal(signal.SIGTERM) is app_handler))
if mode == "asyncio":
    import asyncio

    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: (say("ASYNCIO-HANDLER"), loop.stop()))
    assert relay is not None
    say("INTERCEPTING %s" % relay.intercepting)
    say("READY")
    loop.run_forever()
    say("EXIT")
    sys.exit(0)
if mode == "offline-first":
    signal.signal(signal.SIGTERM, app_handler)
    drainer.start("/offline")
    drainer.wait(5)
if mode == "fork":
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, lambda s, f: (say("CHILD-HANDLER"), os._exit(7)))
        assert relay is not None
        say("CHILD-GETSIGNAL-OWN %s" % (signal.getsignal(signal.SIGTERM) is not relay.on_sigterm))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    say(
        "CHILD-EXIT %d" % os.waitstatus_to_exitcode(status)
        if hasattr(os, "waitstatus_to_exitcode")
        else status
    )
    sys.exit(0)
try:
    say("READY")  # inside the try: a signal may arrive as soon as the test reads this line
    while True:
        time.sleep(0.5)  # a main thread blocked in a sleep, like a plain server's loop
finally:
    say("EXIT")
