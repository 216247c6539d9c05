"""Start one container process: join the pod's network namespace, make a private mount namespace,
mount the volumes, then exec the command. Run by the kubelet as ``python -I -S launch.py SPEC``.

Standard library only and nothing imported from the project, so it starts in a few milliseconds.
``SPEC`` may be followed by a file descriptor number: it is closed when the command is exec'd
(close-on-exec), so the kubelet, reading it to EOF, knows the namespaces and mounts are in place.
The spec (JSON) has: ``netns`` (name under /run/netns, or null for hostNetwork), ``mounts``
(``source``, ``target``, ``read_only``, ordered parents first), ``cwd``, ``argv``, ``env``.
Exit codes when the container cannot start: 127 command not found, 126 not executable,
128 anything else (the message goes to the container's log).
"""

from __future__ import annotations  # annotations stay strings: no `typing` import at start-up

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def _mount(source: str | None, target: str, fstype: str | None, flags: int, label: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            None,
        ),
        "mount %s on %s" % (label or source, target),
    )


_ready_fd = -1


def fail(message: str, code: int) -> None:
    """Say why in the container's log and to the kubelet (through the ready pipe), then exit."""
    sys.stderr.write("local cluster: %s\n" % message)
    if _ready_fd >= 0:
        try:
            os.write(_ready_fd, message.encode("utf-8", "replace"))
        except OSError:
            pass
    sys.exit(code)


def main() -> None:
    global _ready_fd
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if len(sys.argv) > 2:
        _ready_fd = int(sys.argv[2])
        os.set_inheritable(_ready_fd, False)
    try:
        if spec.get("netns"):
            fd = os.open("/run/netns/" + spec["netns"], os.O_RDONLY)
            _check(_libc.setns(fd, CLONE_NEWNET), "setns " + spec["netns"])
            os.close(fd)
        _check(_libc.unshare(CLONE_NEWNS), "unshare mount namespace")
        _mount(None, "/", None, MS_REC | MS_SLAVE)  # nothing mounted here reaches the host
        mounts = spec.get("mounts") or []
        # Every source is opened before anything is mounted: a volume mounted over /tmp must not
        # hide a later source that lives under /tmp. Bind mounts take the /proc/self/fd path.
        sources = [os.open(m["source"], os.O_PATH | os.O_CLOEXEC) for m in mounts]
        image_paths = [p for p in spec.get("image_paths") or [] if os.path.isdir(p)]
        image_fds = [os.open(p, os.O_PATH | os.O_CLOEXEC) for p in image_paths]
        for m, fd in zip(mounts, sources):
            target = m["target"]
            source = "/proc/self/fd/%d" % fd
            if not os.path.lexists(target):
                if os.path.isdir(source):
                    os.makedirs(target, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    open(target, "a").close()
            _mount(source, target, None, MS_BIND | MS_REC, m["source"])
            if m.get("read_only"):
                _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        # The image is the host's own filesystem: a volume over one of its parents (an emptyDir
        # at /tmp with the checkout under /tmp) would hide the program. Bind those back on top.
        targets = [m["target"].rstrip("/") or "/" for m in mounts]
        for path, fd in zip(image_paths, image_fds):
            if any(path.startswith(t.rstrip("/") + "/") for t in targets):
                os.makedirs(path, exist_ok=True)
                _mount("/proc/self/fd/%d" % fd, path, None, MS_BIND | MS_REC, path)
        os.chdir(spec.get("cwd") or "/")
    except OSError as e:
        fail("cannot start the container: %s" % e, 128)
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except FileNotFoundError:
        fail('exec: "%s": executable file not found in $PATH (%s)' % (argv[0], spec["env"].get("PATH")), 127)
    except PermissionError as e:
        fail("exec %s: %s" % (argv[0], e), 126)
    except OSError as e:
        fail("exec %s: %s" % (argv[0], e), 128)


if __name__ == "__main__":
    main()
