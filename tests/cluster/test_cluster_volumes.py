"""Mounted Secrets and ConfigMaps follow their objects, like the kubelet's volume sync (no root needed).

pilotfish's injected pods mount ConfigMap ``pilotfish-ca`` as an *optional* projected source: a
pod created before pilotfish published it into the namespace starts without the file and must
see it appear once the ConfigMap exists, as on Kubernetes, or its agent never reaches the config
service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from hack.cluster.images import ImageMap
from hack.cluster.store import Store
from hack.cluster.volumes import PodVolumes

ROOT = Path(__file__).resolve().parents[2]


def _pod() -> Dict[str, Any]:
    return {
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "web", "image": "python:3.11"}],
            "volumes": [
                {
                    "name": "ca",
                    "projected": {
                        "sources": [
                            {
                                "configMap": {
                                    "name": "pilotfish-ca",
                                    "optional": True,
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            }
                        ]
                    },
                },
                {"name": "settings", "configMap": {"name": "settings"}},
            ],
        },
    }


def test_an_optional_config_map_created_later_appears_and_changes_are_rewritten(tmp_path: Path) -> None:
    store = Store()
    store.create("namespaces", {"metadata": {"name": "shop"}})
    store.create("configmaps", {"metadata": {"name": "settings", "namespace": "shop"}, "data": {"a": "1"}})
    volumes = PodVolumes(
        store,
        _pod(),
        tmp_path,
        ImageMap(ROOT / "hack" / "cluster" / "images.yaml", tmp_path),
        "test",
        b"",
        lambda: "10.244.0.2",
        "10.244.0.1",
        "local",
    )
    made = volumes.prepare()
    ca = made["ca"].path / "ca.crt"
    settings = made["settings"].path / "a"
    assert not ca.exists() and settings.read_text() == "1"

    store.create(
        "configmaps", {"metadata": {"name": "pilotfish-ca", "namespace": "shop"}, "data": {"ca.crt": "PEM"}}
    )
    settings_obj = store.get("configmaps", "shop", "settings")
    assert settings_obj is not None
    store.update("configmaps", dict(settings_obj, data={"a": "2"}))
    volumes.refresh_objects()
    assert ca.read_text() == "PEM"
    assert settings.read_text() == "2"

    store.delete("configmaps", "shop", "settings")
    volumes.refresh_objects()  # a required object gone: the last content stays
    assert settings.read_text() == "2"
