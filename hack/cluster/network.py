"""The local cluster's pod network: one network namespace per pod on a bridge, Services via nftables.

What it emulates and how (root only; :func:`missing_requirements` says what else is needed):

- **Pods.** Each pod gets a network namespace ``pf-<i>-<hash>`` with ``eth0`` (one end of a veth
  pair whose host end is a port of the bridge ``pf-br<i>``) and its own address in the pod range,
  so unmodified manifests that bind ``0.0.0.0:8000`` run side by side. The host side of the
  bridge has the range's first address (``10.244.0.1`` for instance 0): the API server listens
  there, probes and the host reach pods through it.
- **Services.** Each ClusterIP port is one nftables rule ``dnat to numgen random mod N map {...}``
  in the nat prerouting (from pods) and output (from the host) hooks: every *new* connection picks
  an endpoint at random, established connections keep their conntrack NAT binding whatever the
  rules become. Endpoint changes reach the rules after ``propagation_delay`` seconds, the way
  kube-proxy lags behind the API. A Service port without endpoints rejects (connection refused).
  Hairpin (a pod reaching itself through its Service) is masqueraded to the bridge address,
  exactly for the (pod, pod) pairs in the ``hairpin`` set.
- **Names.** Every pod's ``/etc/hosts`` (a file the kubelet bind-mounts, rewritten in place) maps
  ``svc.ns``, ``svc.ns.svc`` and ``svc.ns.svc.cluster.local`` of every Service, and ``svc`` alone
  for the pod's own namespace.

Hard rule: no packet leaves the machine. Pods have no default route (only the pod range, on
``eth0``, and the Service range, via the bridge address); on the host the Service range is routed
to the bridge, so an un-NATed Service packet never takes the default route; forwarding is
enabled on the bridge only (``net.ipv4.conf.pf-br<i>.forwarding``, never the global switch) and
the forward chain drops whatever enters or leaves the bridge unless both ends are pod addresses.
Nothing is masqueraded except hairpin traffic back onto the bridge.

Several clusters can run on one machine: each takes a free *instance* ``i`` (a lock file under
``/run/pf-cluster``) with its own names and ranges (pods ``10.(244+i).0.0/16``, Services
``10.(96+i).0.0/16``); instance 0 has the documented ranges. Whatever an instance whose lock is
free left behind (its owner was killed) is removed by the next :meth:`Network.start`.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = [
    "INSTANCES",
    "LOCK_DIR",
    "Attachment",
    "Network",
    "NetworkUnavailable",
    "Ranges",
    "ServicePort",
    "cleanup_instance",
    "missing_requirements",
    "register_mountpoint",
]

log = logging.getLogger("pilotfish.cluster.network")

INSTANCES = 8  # instance i: pods 10.(244+i).0.0/16, Services 10.(96+i).0.0/16
LOCK_DIR = Path("/run/pf-cluster")
NETNS_DIR = Path("/run/netns")
CLUSTER_DOMAIN = "cluster.local"


class NetworkUnavailable(RuntimeError):
    """The machine cannot host the pod network; the message says exactly what is missing."""


def missing_requirements() -> List[str]:
    """What this machine lacks for the pod network, one line each (empty: all there)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root: network namespaces, the bridge and nftables need it (run as root, as CI does)")
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            missing.append(
                "%s: apt-get install -y %s (or `make cluster-deps`, which runs hack/cluster/requirements.sh)"
                % (tool, package)
            )
    if not missing and not Path("/proc/self/ns/net").exists():
        missing.append("network namespaces: the kernel has none (/proc/self/ns/net is absent)")
    return missing


@dataclass(frozen=True)
class Ranges:
    """The names and address ranges of one cluster instance."""

    instance: int

    @property
    def pod_net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network("10.%d.0.0/16" % (244 + self.instance))

    @property
    def service_net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network("10.%d.0.0/16" % (96 + self.instance))

    @property
    def host_address(self) -> str:
        return str(self.pod_net[1])

    @property
    def kubernetes_ip(self) -> str:
        return str(self.service_net[1])

    @property
    def dns_ip(self) -> str:
        return str(self.service_net[10])

    @property
    def bridge(self) -> str:
        return "pf-br%d" % self.instance

    @property
    def table(self) -> str:
        return "pf-%d" % self.instance

    @property
    def netns_prefix(self) -> str:
        return "pf-%d-" % self.instance

    @property
    def link_prefix(self) -> str:
        return "pf-%d" % self.instance

    @property
    def lock_path(self) -> Path:
        return LOCK_DIR / ("%d.lock" % self.instance)

    def netns_for(self, pod_key: str) -> str:
        return self.netns_prefix + hashlib.sha1(pod_key.encode()).hexdigest()[:10]

    def veth_for(self, pod_key: str) -> str:
        return self.link_prefix + hashlib.sha1(pod_key.encode()).hexdigest()[:10]  # 14 < IFNAMSIZ


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service as the proxy programs it: where new connections may go."""

    name: str
    protocol: str  # TCP | UDP | SCTP
    port: int
    endpoints: Tuple[Tuple[str, int], ...]


@dataclass
class Attachment:
    """A pod's place on the network."""

    pod_key: str
    namespace: str
    hostname: str
    netns: Optional[str]  # None: hostNetwork
    ip: str
    hosts_path: Path
    resolv_path: Path


@dataclass
class _Service:
    namespace: str
    name: str
    cluster_ip: str
    ports: Tuple[ServicePort, ...] = ()


def run(argv: Sequence[str], input_text: Optional[str] = None, check: bool = True) -> str:
    """Run a tool; on failure raise with its stderr (the command is named, for the log)."""
    proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), proc.returncode, proc.stderr.strip()))
    return proc.stdout


def _netns_names() -> List[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _link_names() -> List[str]:
    out = run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def processes_in_netns(names: Sequence[str]) -> List[int]:
    """Pids of every process whose network namespace is one of these named ones."""
    inodes = set()
    for name in names:
        try:
            st = os.stat(NETNS_DIR / name)
            inodes.add((st.st_dev, st.st_ino))
        except OSError:
            continue
    if not inodes:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat("/proc/%s/ns/net" % entry)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inodes:
            pids.append(int(entry))
    return pids


def cleanup_instance(ranges: Ranges, also: Callable[[], None] = lambda: None) -> List[str]:
    """Remove what an instance created (its processes, namespaces, links, table); return what went.

    Call only while holding the instance's lock: then no live cluster owns these names.
    """
    removed: List[str] = []
    ours = [n for n in _netns_names() if n.startswith(ranges.netns_prefix)]
    pids = processes_in_netns(ours)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            removed.append("process %d" % pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path("/proc/%d" % p).exists() and not _is_zombie(p)]
        if pids:
            time.sleep(0.02)
    also()
    removed += _unmount_tagged(ranges.netns_prefix)
    for name in ours:
        run(["ip", "netns", "delete", name], check=False)
        removed.append("netns " + name)
    for link in _link_names():
        if link == ranges.bridge or (
            link.startswith(ranges.link_prefix) and len(link) == len(ranges.link_prefix) + 10
        ):
            run(["ip", "link", "delete", link], check=False)
            removed.append("link " + link)
    if run(["nft", "list", "table", "ip", ranges.table], check=False):
        run(["nft", "delete", "table", "ip", ranges.table], check=False)
        removed.append("nft table ip " + ranges.table)
    return removed


def _unmount_tagged(prefix: str) -> List[str]:
    """Unmount host mounts whose source names this instance (the kubelet's tmpfs emptyDirs)."""
    removed: List[str] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return removed
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        rest = right.split()
        if len(fields) > 4 and len(rest) > 1 and rest[1].startswith(prefix):
            target = fields[4].encode().decode("unicode_escape")
            run(["umount", "-l", target], check=False)
            removed.append("mount " + target)
    return removed


MOUNTPOINTS = LOCK_DIR / "mountpoints"


def register_mountpoint(path: Path) -> None:
    """Remember a directory (or file) created on the host only to mount a volume on it."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with open(MOUNTPOINTS, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("%s\n" % path)


def remove_mountpoints(own: Optional[int]) -> List[str]:
    """Remove the recorded mount points once no other cluster instance runs (nothing uses them)."""
    for i in range(INSTANCES):
        if i == own or not Ranges(i).lock_path.exists():
            continue
        fd = _try_lock(Ranges(i).lock_path, write_pid=False)
        if fd is None:
            return []  # another cluster may have pods mounted on them
        os.close(fd)
    removed = []
    try:
        with open(MOUNTPOINTS, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            paths = sorted({p for p in f.read().splitlines() if p}, key=lambda p: -p.count("/"))
            for p in paths:
                try:
                    if os.path.isdir(p) and not os.path.islink(p) and not os.path.ismount(p):
                        for sub, _dirs, files in os.walk(p, topdown=False):
                            if files:
                                break
                            os.rmdir(sub)
                    elif os.path.isfile(p) and os.path.getsize(p) == 0:
                        os.unlink(p)
                    removed.append("mount point " + p)
                except OSError:
                    pass
            f.seek(0)
            f.truncate()
    except FileNotFoundError:
        pass
    return removed


def _is_zombie(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _try_lock(path: Path, write_pid: bool = True) -> Optional[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if write_pid:
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
    return fd


def _lock_holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def free_instances_cleanup(except_instance: Optional[int] = None) -> List[str]:
    """Clean every instance whose lock is free (its cluster died); return what was removed."""
    removed: List[str] = []
    for i in range(INSTANCES):
        if i == except_instance:
            continue
        ranges = Ranges(i)
        if not _has_leftovers(ranges):
            continue
        fd = _try_lock(ranges.lock_path)
        if fd is None:
            continue
        try:
            removed += cleanup_instance(ranges)
        finally:
            os.close(fd)
    return removed


def _has_leftovers(ranges: Ranges) -> bool:
    if any(n.startswith(ranges.netns_prefix) for n in _netns_names()):
        return True
    return Path("/sys/class/net", ranges.bridge).exists()


class Network:
    """The pod network of one cluster instance (see the module docstring)."""

    def __init__(
        self,
        state_dir: Path,
        propagation_delay: float = 0.0,
        instance: Optional[int] = None,
        cleanup_hook: Callable[[], None] = lambda: None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.propagation_delay = float(propagation_delay)
        self._wanted_instance = instance
        self.files_dir = self.state_dir / "network"  # per instance once started (start() sets it)
        self._cleanup_hook = cleanup_hook  # e.g. the kubelet's unmounts, run before namespaces go
        self.ranges = Ranges(instance or 0)
        self._lock_fd: Optional[int] = None
        self._lock = threading.RLock()
        self._pods: Dict[str, Attachment] = {}
        self._used_ips: Dict[str, str] = {}  # ip -> pod_key
        self._next_ip = 2
        self._services: Dict[Tuple[str, str], _Service] = {}  # names, what DNS sees (at once)
        self._applied: Dict[Tuple[str, str], _Service] = {}  # what the rules say (after the delay)
        self._in_kernel: Dict[Tuple[str, str], _Service] = {}  # _applied as of the last nft run
        self._next_cluster_ip = 11  # .1 kubernetes, .10 DNS
        self._pending: List[Tuple[float, int, Tuple[str, str], Optional[_Service]]] = []
        self._pending_cv = threading.Condition(self._lock)
        self._seq = 0
        self._applier: Optional[threading.Thread] = None
        self._stopping = False
        self.started = False

    # -- addresses -------------------------------------------------------------------------
    @property
    def host_address(self) -> str:
        return self.ranges.host_address

    @property
    def pod_cidr(self) -> str:
        return str(self.ranges.pod_net)

    @property
    def service_cidr(self) -> str:
        return str(self.ranges.service_net)

    @property
    def kubernetes_ip(self) -> str:
        return self.ranges.kubernetes_ip

    def allocate_cluster_ip(self) -> str:
        """A free ClusterIP of this instance's Service range (``.1`` is ``kubernetes``)."""
        with self._lock:
            taken = {s.cluster_ip for s in self._services.values()}
            size = self.ranges.service_net.num_addresses - 2
            for _ in range(size):
                candidate = str(self.ranges.service_net[self._next_cluster_ip])
                self._next_cluster_ip = self._next_cluster_ip + 1 if self._next_cluster_ip < size else 11
                if candidate not in taken:
                    return candidate
        raise RuntimeError("the Service range %s is full" % self.ranges.service_net)

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Check the machine, take an instance, clean what dead clusters left, build the bridge."""
        missing = missing_requirements()
        if missing:
            raise NetworkUnavailable("the local cluster's network needs:\n  - " + "\n  - ".join(missing))
        self._take_instance()
        self.files_dir = self.state_dir / ("network-%d" % self.ranges.instance)
        removed = free_instances_cleanup(except_instance=self.ranges.instance)
        removed += cleanup_instance(self.ranges, self._cleanup_hook)
        removed += remove_mountpoints(self.ranges.instance)
        if removed:
            log.warning("removed leftovers of a cluster that did not stop cleanly: %s", ", ".join(removed))
        r = self.ranges
        batch = "\n".join(
            [
                "link add %s type bridge" % r.bridge,
                "addr add %s/%d dev %s" % (r.host_address, r.pod_net.prefixlen, r.bridge),
                "link set %s up" % r.bridge,
                "route add %s dev %s src %s" % (r.service_net, r.bridge, r.host_address),
            ]
        )
        self._render_rules()  # the forward filter is in place before forwarding is switched on
        run(["ip", "-batch", "-"], input_text=batch + "\n")
        Path("/proc/sys/net/ipv4/conf/%s/forwarding" % r.bridge).write_text("1\n")
        ipv6 = Path("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % r.bridge)
        if ipv6.exists():
            ipv6.write_text("1\n")
        (self.files_dir).mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self._applier = threading.Thread(target=self._apply_loop, name="pf-network-applier", daemon=True)
        self._applier.start()
        self.started = True

    def _take_instance(self) -> None:
        candidates = [self._wanted_instance] if self._wanted_instance is not None else list(range(INSTANCES))
        for i in candidates:
            assert i is not None
            fd = _try_lock(Ranges(i).lock_path)
            if fd is not None:
                self._lock_fd = fd
                self.ranges = Ranges(i)
                return
        if self._wanted_instance is not None:
            path = Ranges(self._wanted_instance).lock_path
            raise NetworkUnavailable(
                "cluster network instance %d is in use by pid %s (%s)"
                % (self._wanted_instance, _lock_holder(path), path)
            )
        raise NetworkUnavailable("all %d cluster network instances are in use (%s)" % (INSTANCES, LOCK_DIR))

    def stop(self) -> None:
        """Remove everything this instance created (pods still attached included)."""
        with self._lock:
            self._stopping = True
            self._pending_cv.notify_all()
        if self._applier is not None:
            self._applier.join(timeout=5)
        if self._lock_fd is None:
            return
        for key in list(self._pods):
            self.detach(key)
        cleanup_instance(self.ranges, self._cleanup_hook)
        remove_mountpoints(self.ranges.instance)
        shutil.rmtree(self.files_dir, ignore_errors=True)
        for path in (self.ranges.lock_path, MOUNTPOINTS):
            try:
                if path == self.ranges.lock_path or path.stat().st_size == 0:
                    path.unlink()
            except OSError:
                pass
        try:
            LOCK_DIR.rmdir()
        except OSError:
            pass
        os.close(self._lock_fd)
        self._lock_fd = None
        self.started = False

    # -- pods ------------------------------------------------------------------------------
    def _allocate_ip(self, pod_key: str) -> str:
        size = self.ranges.pod_net.num_addresses - 2
        for _ in range(size):
            index = self._next_ip
            self._next_ip = index + 1 if index < size else 2
            candidate = str(self.ranges.pod_net[index])
            if candidate not in self._used_ips:
                self._used_ips[candidate] = pod_key
                return candidate
        raise RuntimeError("the pod range %s is full" % self.ranges.pod_net)

    def attach(
        self, pod_key: str, namespace: str = "default", hostname: str = "", host_network: bool = False
    ) -> Attachment:
        """Give a pod its namespace, address and hosts file (idempotent per pod_key)."""
        with self._lock:
            if pod_key in self._pods:
                return self._pods[pod_key]
            ip = self.host_address if host_network else self._allocate_ip(pod_key)
            files = self.files_dir / hashlib.sha1(pod_key.encode()).hexdigest()[:12]
            files.mkdir(parents=True, exist_ok=True)
            attachment = Attachment(
                pod_key=pod_key,
                namespace=namespace,
                hostname=hostname or pod_key.rsplit("/", 1)[-1],
                netns=None if host_network else self.ranges.netns_for(pod_key),
                ip=ip,
                hosts_path=files / "hosts",
                resolv_path=files / "resolv.conf",
            )
            self._pods[pod_key] = attachment
        try:
            if attachment.netns is not None:
                self._plumb(attachment)
            attachment.resolv_path.write_text(
                "# pilotfish local cluster: names are in /etc/hosts\nnameserver 127.0.0.1\n"
                "search %s.svc.%s svc.%s %s\noptions ndots:5 attempts:1 timeout:1\n"
                % (namespace, CLUSTER_DOMAIN, CLUSTER_DOMAIN, CLUSTER_DOMAIN)
            )
            with self._lock:
                self._write_hosts(attachment)
                if attachment.netns is not None:
                    self._render_rules()
        except Exception:
            self.detach(pod_key)
            raise
        return attachment

    def _plumb(self, a: Attachment) -> None:
        r = self.ranges
        assert a.netns is not None
        veth = r.veth_for(a.pod_key)
        run(["ip", "netns", "add", a.netns])
        run(
            ["ip", "-batch", "-"],
            input_text="\n".join(
                [
                    "link add %s type veth peer name eth0 netns %s" % (veth, a.netns),
                    "link set %s master %s" % (veth, r.bridge),
                    # Hairpin: with bridge netfilter a pod's packet DNATed back to itself is
                    # bridged out of the port it came in on, which a bridge refuses by default.
                    "link set %s type bridge_slave hairpin on" % veth,
                    "link set %s up" % veth,
                ]
            )
            + "\n",
        )
        run(
            ["ip", "-n", a.netns, "-batch", "-"],
            input_text="\n".join(
                [
                    "link set lo up",
                    "addr add %s/%d dev eth0" % (a.ip, r.pod_net.prefixlen),
                    "link set eth0 up",
                    "route add %s via %s dev eth0" % (r.service_net, r.host_address),
                ]
            )
            + "\n",
        )

    def detach(self, pod_key: str) -> None:
        """Remove a pod's namespace and address (its processes must be gone)."""
        with self._lock:
            a = self._pods.pop(pod_key, None)
            if a is None:
                return
            if self._used_ips.get(a.ip) == pod_key:
                del self._used_ips[a.ip]
            if not self._stopping and self.started:
                self._render_rules()
        if a.netns is not None:
            run(["ip", "link", "delete", self.ranges.veth_for(pod_key)], check=False)
            run(["ip", "netns", "delete", a.netns], check=False)
        shutil.rmtree(a.hosts_path.parent, ignore_errors=True)

    def attachment(self, pod_key: str) -> Optional[Attachment]:
        with self._lock:
            return self._pods.get(pod_key)

    # -- services --------------------------------------------------------------------------
    def set_service(self, namespace: str, name: str, cluster_ip: str, ports: Sequence[ServicePort]) -> None:
        """Program a Service: names at once, endpoints after the propagation delay."""
        svc = _Service(namespace, name, cluster_ip, tuple(ports))
        with self._lock:
            old = self._services.get((namespace, name))
            self._services[(namespace, name)] = svc
            if old is None or old.cluster_ip != cluster_ip:
                self._write_all_hosts()
            self._schedule((namespace, name), svc)

    def remove_service(self, namespace: str, name: str) -> None:
        with self._lock:
            if self._services.pop((namespace, name), None) is not None:
                self._write_all_hosts()
            self._schedule((namespace, name), None)

    def _schedule(self, key: Tuple[str, str], svc: Optional[_Service]) -> None:
        self._seq += 1
        self._pending.append((time.monotonic() + self.propagation_delay, self._seq, key, svc))
        self._pending_cv.notify_all()

    def _apply_loop(self) -> None:
        with self._lock:
            while not self._stopping:
                if not self._pending:
                    self._pending_cv.wait()
                    continue
                due = self._pending[0][0]
                now = time.monotonic()
                if due > now:
                    self._pending_cv.wait(due - now)
                    continue
                while self._pending and self._pending[0][0] <= time.monotonic():
                    _, _, key, svc = self._pending.pop(0)
                    if svc is None:
                        self._applied.pop(key, None)
                    else:
                        self._applied[key] = svc
                try:
                    self._render_rules()
                except Exception:
                    log.exception("programming Services failed")

    def applied_endpoints(self, namespace: str, name: str) -> Dict[int, Tuple[Tuple[str, int], ...]]:
        """What the rules currently send each Service port to (for tests and debugging)."""
        with self._lock:
            svc = self._in_kernel.get((namespace, name))
            return {p.port: p.endpoints for p in svc.ports} if svc else {}

    # -- rendering -------------------------------------------------------------------------
    def _write_all_hosts(self) -> None:
        for a in self._pods.values():
            self._write_hosts(a)

    def _write_hosts(self, a: Attachment) -> None:
        lines = [
            "# pilotfish local cluster: this pod's names and the Services' (rewritten as they change)",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            "%s\t%s" % (a.ip, a.hostname),
        ]
        for (ns, name), svc in sorted(self._services.items()):
            names = [
                "%s.%s.svc.%s" % (name, ns, CLUSTER_DOMAIN),
                "%s.%s.svc" % (name, ns),
                "%s.%s" % (name, ns),
            ]
            if ns == a.namespace:
                names.append(name)
            lines.append("%s\t%s" % (svc.cluster_ip, " ".join(names)))
        text = "\n".join(lines) + "\n"
        # In place: the pod sees this inode through its bind mount; a rename would not reach it.
        with open(a.hosts_path, "a+") as f:
            f.seek(0)
            if f.read() == text:
                return
            f.seek(0)
            f.truncate()
            f.write(text)

    def _render_rules(self) -> None:
        r = self.ranges
        pod_ips = sorted(a.ip for a in self._pods.values() if a.netns is not None)
        service_rules = []
        for (_ns, _name), svc in sorted(self._applied.items()):
            for port in svc.ports:
                proto = port.protocol.lower()
                if proto not in ("tcp", "udp", "sctp") or not port.endpoints:
                    continue  # no endpoints: the filter chains reject
                match = "ip daddr %s %s dport %d" % (svc.cluster_ip, proto, port.port)
                if len(port.endpoints) == 1:
                    ip, target = port.endpoints[0]
                    service_rules.append("%s dnat ip to %s:%d" % (match, ip, target))
                else:
                    entries = ", ".join(
                        "%d : %s . %d" % (i, ip, t) for i, (ip, t) in enumerate(port.endpoints)
                    )
                    service_rules.append(
                        "%s dnat ip to numgen random mod %d map { %s }"
                        % (match, len(port.endpoints), entries)
                    )
        hairpin = ", ".join("%s . %s" % (ip, ip) for ip in pod_ips)
        script = "\n".join(
            [
                "table ip %s" % _q(r.table),
                "delete table ip %s" % _q(r.table),
                "table ip %s {" % _q(r.table),
                "  set hairpin {",
                "    type ipv4_addr . ipv4_addr",
                ("    elements = { %s }" % hairpin) if hairpin else "",
                "  }",
                "  chain services {",
                *("    " + rule for rule in service_rules),
                "  }",
                "  chain nat_prerouting {",
                "    type nat hook prerouting priority -100; policy accept;",
                "    ip daddr %s jump services" % r.service_net,
                "  }",
                "  chain nat_output {",
                "    type nat hook output priority -100; policy accept;",
                "    ip daddr %s jump services" % r.service_net,
                "  }",
                "  chain nat_postrouting {",
                "    type nat hook postrouting priority 100; policy accept;",
                '    oifname "%s" ip saddr . ip daddr @hairpin masquerade' % r.bridge,
                "  }",
                "  chain filter_forward {",
                "    type filter hook forward priority 0; policy accept;",
                "    ip daddr %s reject" % r.service_net,
                '    iifname "%s" ip saddr %s ip daddr %s accept' % (r.bridge, r.pod_net, r.pod_net),
                '    iifname "%s" drop' % r.bridge,
                '    oifname "%s" drop' % r.bridge,
                "  }",
                "  chain filter_output {",
                "    type filter hook output priority 0; policy accept;",
                "    ip daddr %s reject" % r.service_net,
                "  }",
                "}",
            ]
        )
        run(["nft", "-f", "-"], input_text=script + "\n")
        self._in_kernel = dict(self._applied)

    def pods(self) -> Iterator[Attachment]:
        with self._lock:
            return iter(list(self._pods.values()))


def _q(name: str) -> str:
    return name  # table names of the form pf-<i> need no quoting in nft's syntax
