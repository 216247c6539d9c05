# The agent image: the agent tree and one static binary to copy it. No shell, no Python.
# Build from the repository root after `make agent-tree`:
#   make agent-tree
#   docker build -f deploy/docker/agent.Dockerfile -t ghcr.io/pilotfish/agent:0.1.0 .
#
# Why busybox's cp: the init container only has to copy a directory. A statically linked
# busybox (the musl build has no shared-library dependencies) installed under the name
# /bin/cp runs its `cp` applet directly (busybox dispatches on argv[0]), so the image holds
# no /bin/sh and nothing a shell could be started from. Writing our own copier would need a
# compiler toolchain in the build for the same ~1 MB; `python -c` would need an interpreter
# in the image, and the app's interpreter lives in another container.
#
# Layout (what the webhook relies on, webhook/pilotfish_webhook/admission/mutate.py):
#   /pilotfish-agent/bootstrap/sitecustomize.py   <- PYTHONPATH=/pilotfish/bootstrap after the copy
#   /pilotfish-agent/lib/pilotfish/...
# Copy mode: pilotfish-init runs `/bin/cp -R /pilotfish-agent/. /pilotfish/` into an emptyDir.
# Image-volume mode: the image is mounted directly with subPath pilotfish-agent.
FROM busybox:1.37.0-musl AS busybox

FROM scratch
COPY --from=busybox /bin/busybox /bin/cp
COPY build/agent-tree/ /pilotfish-agent/
USER 65532:65532
ENTRYPOINT ["/bin/cp", "-R", "/pilotfish-agent/.", "/pilotfish/"]
