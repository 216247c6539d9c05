"""The agent's side of the central config service, one module per job.

- :mod:`.transport`: one HTTP(S) call at a time (TLS against ``PILOTFISH_CONFIG_CA``, the
  bearer token re-read on every call, the fork-safe TLS lock), :class:`~.transport.CallFailed`,
  and the back-off every long-poll shares.
- :mod:`.cache`: where on-disk caches live (config here, the routing table in
  :mod:`pilotfish.routing.core`).
- :mod:`.config`: the owner's long-poll of ``/v1/config`` and its on-disk cache.
- :mod:`.registration`: this instance's entry in the registry, renewed until deregistered,
  and the lifecycle's bounded, fail-open view of it.
- :mod:`.follower`: in worker processes, the config the owner writes to the cache.

Nothing here starts anything by itself: :mod:`pilotfish.owner` does, in the owner process, and
:mod:`pilotfish.runtime` starts the follower in workers. Standard library only; imported after
wake-up, never at interpreter start. Nothing here imports the runtime, the owner or the lifecycle.
"""
