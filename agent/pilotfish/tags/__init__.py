"""Traffic tags: a request's lane tag, read on the way in and written on every call out.

``context`` holds the ContextVar, ``inbound`` extracts the tag (headers, baggage,
lane rules), ``propagation`` carries it into threads and pools, ``outbound`` and
``pilotfish.integrations.*`` write it on outbound calls, ``install`` wires it up.
"""
