#!/bin/sh
# What the local cluster's node needs on this machine (make cluster-deps; make test runs it).
# Idempotent: installs nftables with apt-get when it is missing and we are root; otherwise says
# what is missing and exits 0, so the cluster tests skip with that notice instead of failing.
missing=""
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
command -v nsenter >/dev/null 2>&1 || missing="$missing util-linux"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "local cluster: not root, cannot install:$missing (the cluster tests will skip)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "local cluster: missing:$missing and no apt-get to install it (the cluster tests will skip)" >&2
    exit 0
fi
echo "local cluster: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q $missing >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $missing >/dev/null; } \
    || echo "local cluster: could not install$missing (the cluster tests will skip)" >&2
exit 0
