"""A pod's volumes as host directories (the kubelet bind-mounts them at each volumeMount).

- ``emptyDir``: a directory per pod; ``medium: Memory`` is a tmpfs mounted there (its source is
  named ``pf-<instance>-...`` so a crashed cluster's mounts can be found and removed).
- ``secret``, ``configMap``, ``downwardAPI``, ``projected`` (with ``serviceAccountToken`` from
  ``store.issue_token``): files written once at pod start (tokens are rewritten at 80 % of
  their lifetime, as the kubelet does).
- ``hostPath``: the host path itself. ``image`` volumes: the mapped image's directories.
- The default service-account token directory (``/var/run/secrets/kubernetes.io/serviceaccount``:
  token, ca.crt, namespace) unless ``automountServiceAccountToken`` is false.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .images import ImageMap, ImageNotMapped
from .podenv import ConfigError, data_of, field_value, resource_value

__all__ = ["SA_DIR", "PodVolumes", "Volume"]

Obj = Dict[str, Any]
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_VOLUME = "kube-api-access-pf"  # the volume the kubelet adds for the default token directory
DEFAULT_TOKEN_SECONDS = 3607  # what the API server's ServiceAccount admission asks for


@dataclass
class Volume:
    """One volume as the kubelet mounts it."""

    name: str
    path: Path  # on the host
    read_only: bool = False  # secret-like volumes are read-only whatever the mount says
    sub_paths: Dict[str, Path] = field(default_factory=dict)  # image volumes: subPath -> host dir


@dataclass
class _Token:
    path: Path
    audience: Optional[str]
    seconds: int
    written: float


class PodVolumes:
    """Materialises and later removes one pod's volumes under ``pod_dir/volumes``."""

    def __init__(
        self,
        store: Any,
        pod: Obj,
        pod_dir: Path,
        images: ImageMap,
        mount_tag: str,
        ca_pem: bytes,
        pod_ip: Callable[[], str],
        host_ip: str,
        node_name: str,
    ) -> None:
        self.store = store
        self.pod = pod
        self.dir = pod_dir / "volumes"
        self.images = images
        self.mount_tag = mount_tag
        self.ca_pem = ca_pem
        self.pod_ip = pod_ip
        self.host_ip = host_ip
        self.node_name = node_name
        self.volumes: Dict[str, Volume] = {}
        self._tmpfs: List[Path] = []
        self._tokens: List[_Token] = []
        # (directory, resource, object name, volume/source spec, default mode) of every secret and
        # configMap the pod mounts, re-read by refresh_objects() like the kubelet's volume sync
        self._objects: List[Tuple[Path, str, str, Obj, int]] = []

    @property
    def namespace(self) -> str:
        return (self.pod.get("metadata") or {}).get("namespace") or "default"

    @property
    def service_account(self) -> str:
        return (self.pod.get("spec") or {}).get("serviceAccountName") or "default"

    def prepare(self) -> Dict[str, Volume]:
        """Create every volume of the pod (raises ConfigError when one cannot be made yet)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for vol in (self.pod.get("spec") or {}).get("volumes") or []:
            name = vol.get("name")
            if name and name not in self.volumes:
                self.volumes[name] = self._make(name, vol)
        if self.automount() and SA_VOLUME not in self.volumes:
            d = self._fresh_dir(SA_VOLUME)
            self._token(d / "token", None, DEFAULT_TOKEN_SECONDS)
            (d / "ca.crt").write_bytes(self.ca_pem)
            (d / "namespace").write_text(self.namespace)
            self.volumes[SA_VOLUME] = Volume(SA_VOLUME, d, read_only=True)
        return self.volumes

    def automount(self) -> bool:
        flag = (self.pod.get("spec") or {}).get("automountServiceAccountToken")
        if flag is None:
            sa = self.store.get("serviceaccounts", self.namespace, self.service_account) or {}
            flag = sa.get("automountServiceAccountToken")
        return flag is not False

    def _fresh_dir(self, name: str) -> Path:
        d = self.dir / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _make(self, name: str, vol: Obj) -> Volume:
        if "emptyDir" in vol:
            d = self._fresh_dir(name)
            spec = vol.get("emptyDir") or {}
            if spec.get("medium") == "Memory" and not os.path.ismount(d):
                options = "mode=0777"
                if spec.get("sizeLimit"):
                    options += ",size=%s" % str(spec["sizeLimit"]).replace("i", "").lower()
                tag = "%s-emptydir" % self.mount_tag
                subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", options, tag, str(d)], check=True, capture_output=True
                )
                self._tmpfs.append(d)
            else:
                d.chmod(0o777)
            return Volume(name, d)
        if "hostPath" in vol:
            spec = vol["hostPath"] or {}
            p = Path(spec.get("path", "/"))
            if spec.get("type") in ("DirectoryOrCreate",) and not p.exists():
                p.mkdir(parents=True, exist_ok=True)
            return Volume(name, p)
        if "secret" in vol:
            spec = vol["secret"] or {}
            d = self._fresh_dir(name)
            self._write_object(d, "secrets", spec.get("secretName", ""), spec, spec.get("defaultMode", 0o644))
            self._objects.append(
                (d, "secrets", spec.get("secretName", ""), spec, spec.get("defaultMode", 0o644))
            )
            return Volume(name, d, read_only=True)
        if "configMap" in vol:
            spec = vol["configMap"] or {}
            d = self._fresh_dir(name)
            self._write_object(d, "configmaps", spec.get("name", ""), spec, spec.get("defaultMode", 0o644))
            self._objects.append(
                (d, "configmaps", spec.get("name", ""), spec, spec.get("defaultMode", 0o644))
            )
            return Volume(name, d, read_only=True)
        if "downwardAPI" in vol:
            spec = vol["downwardAPI"] or {}
            d = self._fresh_dir(name)
            self._write_downward(d, spec.get("items") or [], spec.get("defaultMode", 0o644))
            return Volume(name, d, read_only=True)
        if "projected" in vol:
            spec = vol["projected"] or {}
            d = self._fresh_dir(name)
            mode = spec.get("defaultMode", 0o644)
            for source in spec.get("sources") or []:
                if "serviceAccountToken" in source:
                    t = source["serviceAccountToken"] or {}
                    self._token(
                        d / t.get("path", "token"), t.get("audience"), int(t.get("expirationSeconds") or 3600)
                    )
                elif "secret" in source:
                    s = source["secret"] or {}
                    self._write_object(d, "secrets", s.get("name", ""), s, mode)
                    self._objects.append((d, "secrets", s.get("name", ""), s, mode))
                elif "configMap" in source:
                    s = source["configMap"] or {}
                    self._write_object(d, "configmaps", s.get("name", ""), s, mode)
                    self._objects.append((d, "configmaps", s.get("name", ""), s, mode))
                elif "downwardAPI" in source:
                    self._write_downward(d, (source["downwardAPI"] or {}).get("items") or [], mode)
            return Volume(name, d, read_only=True)
        if "image" in vol:
            reference = (vol.get("image") or {}).get("reference", "")
            try:
                image = self.images.resolve(reference)
            except ImageNotMapped as e:
                raise ConfigError(str(e)) from None
            d = self._fresh_dir(name)
            subs = {path.strip("/"): host for path, host in image.mounts.items()}
            return Volume(name, d, read_only=True, sub_paths=subs)
        # persistentVolumeClaim, csi, ...: no storage here; an empty per-pod directory stands in.
        return Volume(name, self._fresh_dir(name))

    def _write_object(self, d: Path, resource: str, obj_name: str, spec: Obj, mode: int) -> None:
        obj = self.store.get(resource, self.namespace, obj_name)
        if obj is None:
            if spec.get("optional"):
                return
            raise ConfigError('%s "%s" not found' % (resource[:-1], obj_name))
        data = data_of(resource, obj)
        items = spec.get("items")
        pairs: List[Tuple[str, str, Optional[int]]] = (
            [(i.get("key", ""), i.get("path", i.get("key", "")), i.get("mode")) for i in items]
            if items
            else [(k, k, None) for k in data]
        )
        for key, rel, item_mode in pairs:
            if key not in data:
                if spec.get("optional"):
                    continue
                raise ConfigError("%s %s has no key %s" % (resource[:-1], obj_name, key))
            self._write(d / rel, data[key], item_mode if item_mode is not None else mode)

    def _write_downward(self, d: Path, items: List[Obj], mode: int) -> None:
        for item in items:
            if "fieldRef" in item:
                value = field_value(
                    self.pod,
                    item["fieldRef"].get("fieldPath", ""),
                    self.pod_ip(),
                    self.host_ip,
                    self.node_name,
                )
            elif "resourceFieldRef" in item:
                ref = item["resourceFieldRef"]
                containers = (self.pod.get("spec") or {}).get("containers") or []
                container: Obj = next(
                    (c for c in containers if c.get("name") == ref.get("containerName")), {}
                )
                value = resource_value(container, ref)
            else:
                continue
            self._write(d / item.get("path", "value"), value.encode(), item.get("mode", mode))

    def _write(self, path: Path, data: bytes, mode: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, int(mode) if isinstance(mode, int) else 0o644)
        os.replace(tmp, path)

    def _token(self, path: Path, audience: Optional[str], seconds: int) -> None:
        token = self.store.issue_token(self.namespace, self.service_account, audience, seconds, self.pod)
        self._write(path, token.encode(), 0o644)
        self._tokens.append(_Token(path, audience, seconds, time.time()))

    def refresh_tokens(self) -> None:
        """Rewrite tokens past 80 % of their lifetime (call now and then)."""
        now = time.time()
        for t in self._tokens:
            if now - t.written >= 0.8 * t.seconds:
                token = self.store.issue_token(
                    self.namespace, self.service_account, t.audience, t.seconds, self.pod
                )
                self._write(t.path, token.encode(), 0o644)
                t.written = now

    def refresh_objects(self) -> None:
        """Write the current content of the Secrets and ConfigMaps the pod mounts (the kubelet's sync).

        An ``optional`` one that did not exist when the pod started appears once it is created;
        changed keys are rewritten (atomically). Keys removed from the object are left in place.
        """
        for d, resource, name, spec, mode in self._objects:
            try:
                self._write_object(d, resource, name, spec, mode)
            except ConfigError:
                pass  # a required object deleted while the pod runs: keep the last content

    def remove(self) -> None:
        """Unmount tmpfs volumes and delete the pod's volume directories."""
        for d in self._tmpfs:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)
        self._tmpfs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
