"""Consumer-side routing: each outbound call to a known Service picks its instance here.

Like MSE, Dubbo and Sermant, the *caller's* agent chooses the instance, per
request and not per TCP connection: lane first (the request's tag), then a
weighted random pick by the provider's warm-up weight, never an offline or
recently unreachable instance. Only the TCP destination changes; the URL,
Host, cookies and TLS names stay the Service's.

- :mod:`.hosts`: which host names and addresses mean which Service.
- :mod:`.table`: the Services and instances of one registry answer, and the pick.
- :mod:`.core`: the process's current table (long-polled from the config
  service), offline eviction, connect-failure ejection, ``/status`` and
  ``/metrics``; what the client hooks call.
- :mod:`.install`: import hooks that put the client hooks in place
  (``pilotfish.integrations.routing_*``).

Standard library only, imported after wake-up or when a client library is
imported, never at interpreter start.
"""
