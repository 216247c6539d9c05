"""A local Kubernetes cluster for tests and demos: ``python -m hack.cluster`` (``make cluster``).

One process runs an API server that kubectl and the ``kubernetes`` client speak, the object
store behind it, admission through MutatingWebhookConfigurations, the controllers, and one
node (network namespaces per pod, host processes for containers). docs/local-cluster.md says
what it emulates and what it does not.
"""
