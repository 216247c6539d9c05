"""What pilotfish adds at pod level: the agent volume, the token volume, ``pilotfish-init``.

Each is returned whole, in its desired form, so a re-run replaces it by name and converges.
"""

from __future__ import annotations

from typing import Any, Dict

from pilotfish_webhook.admission import contract as c
from pilotfish_webhook.admission.config import InjectionConfig

Obj = Dict[str, Any]

# Where the agent image keeps the tree (deploy/docker/agent.Dockerfile).
AGENT_TREE_IN_IMAGE = "/pilotfish-agent"


def agent_volume(config: InjectionConfig, image: str) -> Obj:
    if config.mount_mode == "image":
        return {"name": c.AGENT_VOLUME, "image": {"reference": image, "pullPolicy": "IfNotPresent"}}
    return {"name": c.AGENT_VOLUME, "emptyDir": {"sizeLimit": config.volume_size_limit}}


def state_volume(config: InjectionConfig) -> Obj:
    """Writable and small: the agent mount is read-only and the root filesystem may be too."""
    return {"name": c.STATE_VOLUME, "emptyDir": {"sizeLimit": config.state_size_limit}}


def token_volume(config: InjectionConfig) -> Obj:
    return {
        "name": c.TOKEN_VOLUME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": c.TOKEN_AUDIENCE,
                        "expirationSeconds": config.token_expiration_seconds,
                        "path": "token",
                    }
                },
                {
                    "configMap": {
                        "name": c.CA_CONFIGMAP,
                        "optional": True,
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
            ]
        },
    }


def init_container(image: str) -> Obj:
    """``pilotfish-init``: copies the agent tree; compliant with the restricted Pod Security Standard.

    The agent image has no shell: ``/bin/cp`` is a static busybox binary that dispatches
    on its own name (deploy/docker/agent.Dockerfile). A numeric user is required because
    ``runAsNonRoot`` cannot be verified for an image whose user is a name or root.
    """
    return {
        "name": c.INIT_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/cp", "-R", AGENT_TREE_IN_IMAGE + "/.", c.MOUNT_PATH + "/"],
        "volumeMounts": [{"name": c.AGENT_VOLUME, "mountPath": c.MOUNT_PATH}],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "32Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
