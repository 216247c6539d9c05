"""Container images of the local cluster, mapped onto this machine (hack/cluster/images.yaml).

Nothing is pulled: an image reference is matched against the map's patterns and becomes an
interpreter (the project's .venv or a pyenv version), host directories bind-mounted at the
image's paths, a default command, PATH and environment. The map file documents its fields.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

__all__ = ["Image", "ImageMap", "ImageNotMapped", "REPO_ROOT", "pyenv_interpreter"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageNotMapped(LookupError):
    """No entry of the image map runs this image here."""


@dataclass
class Image:
    """How a container of one image runs on this machine."""

    reference: str
    entrypoint: List[str] = field(default_factory=list)
    cmd: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    mounts: Dict[str, Path] = field(default_factory=dict)  # image path -> host path (read-only)
    workdir: str = "/"
    # Host directories the image is made of (the checkout, its venv, a pyenv interpreter): a
    # volume mounted over one of their parents must not hide them (see launch.py).
    host_dirs: List[str] = field(default_factory=list)


def _pyenv_root() -> Path:
    env = os.environ.get("PYENV_ROOT")
    if env:
        return Path(env)
    try:
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return Path.home() / ".pyenv"


def pyenv_interpreter(version: str) -> Optional[Path]:
    """The bin directory of pyenv's newest ``version.*`` interpreter, or None."""
    versions = _pyenv_root() / "versions"
    try:
        names = [n for n in os.listdir(versions) if n == version or n.startswith(version + ".")]
    except OSError:
        return None

    def key(name: str) -> List[int]:
        return [int(p) if p.isdigit() else -1 for p in name.split(".")]

    for name in sorted(names, key=key, reverse=True):
        bin_dir = versions / name / "bin"
        if (bin_dir / "python3").exists():
            return bin_dir
    return None


class ImageMap:
    """The parsed image map; :meth:`resolve` turns a reference into an :class:`Image`."""

    def __init__(self, path: Path, state_dir: Path, root: Path = REPO_ROOT) -> None:
        self.path = Path(path)
        self.root = root
        self.state_dir = Path(state_dir)
        data = yaml.safe_load(self.path.read_text()) or {}
        self.entries: List[Dict[str, Any]] = list(data.get("images") or [])

    def _host_path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.root / p

    def _venv(self) -> Path:
        return self.root / ".venv"

    def resolve(self, reference: str) -> Image:
        for entry in self.entries:
            if not fnmatch.fnmatchcase(reference, str(entry.get("match", ""))):
                continue
            image = self._build(reference, entry)
            if image is not None:
                return image
        raise ImageNotMapped(
            "image %r is not in the local cluster's image map %s (images are mapped, not pulled)"
            % (reference, self.path)
        )

    def _build(self, reference: str, entry: Dict[str, Any]) -> Optional[Image]:
        env = {str(k): str(v) for k, v in (entry.get("env") or {}).items()}
        python = entry.get("python")
        path = SYSTEM_PATH
        if python == "venv":
            path = "%s:%s" % (self._venv() / "bin", SYSTEM_PATH)
        elif python:
            bin_dir = pyenv_interpreter(str(python))
            if bin_dir is None:
                return None
            path = "%s:%s" % (bin_dir, SYSTEM_PATH)
            env.setdefault("PYTHONUSERBASE", str(self._user_base(str(python), bin_dir)))
        env.setdefault("PATH", path)
        mounts = {str(k): self._host_path(str(v)) for k, v in (entry.get("mounts") or {}).items()}
        host_dirs = [str(self.root.resolve())]
        for directory in path.split(":") + [env.get("PYTHONUSERBASE", "")]:
            if directory and directory not in SYSTEM_PATH.split(":"):
                real = os.path.realpath(directory)
                if real not in host_dirs:
                    host_dirs.append(real)
        return Image(
            reference=reference,
            entrypoint=[str(x) for x in entry.get("entrypoint") or []],
            cmd=[str(x) for x in entry.get("cmd") or []],
            env=env,
            mounts=mounts,
            workdir=str(entry.get("workdir") or "/"),
            host_dirs=host_dirs,
        )

    def _user_base(self, version: str, bin_dir: Path) -> Path:
        """A user base whose site-packages holds one .pth naming the .venv's packages.

        A user site's .pth files are read at start-up, so another interpreter sees the
        project's packages without PYTHONPATH (which pods set themselves, e.g. the agent's).
        """
        minor = bin_dir.parent.name.split(".")
        short = ".".join(minor[:2])
        base = self.state_dir / "images" / ("python" + short)
        site = base / "lib" / ("python" + short) / "site-packages"
        site.mkdir(parents=True, exist_ok=True)
        venv_sites = sorted((self._venv() / "lib").glob("python3*/site-packages"))
        (site / "pf-venv.pth").write_text("".join("%s\n" % s for s in venv_sites))
        return base
