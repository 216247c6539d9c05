"""Command-line flags of the admission part of ``pilotfish-webhook serve``.

Kept out of ``cli.py`` so the admission and config-service flags grow independently.
"""

from __future__ import annotations

import argparse
import os

from pilotfish_webhook import __version__
from pilotfish_webhook.admission.mutate import InjectionConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("admission (pod injection)")
    group.add_argument(
        "--agent-image",
        default=os.environ.get("PILOTFISH_AGENT_IMAGE", "ghcr.io/pilotfish/agent"),
        help="agent image repository; the tag is the agent version",
    )
    group.add_argument("--agent-version", default=os.environ.get("PILOTFISH_AGENT_VERSION", __version__))
    group.add_argument(
        "--mount-mode",
        choices=("copy", "image"),
        default="copy",
        help="copy: init container + emptyDir (default); image: Kubernetes image volume (1.33+)",
    )
    group.add_argument(
        "--config-url",
        default=os.environ.get("PILOTFISH_CONFIG_URL", "https://pilotfish.pilotfish-system.svc:443"),
        help="config service URL given to agents as PILOTFISH_CONFIG_URL",
    )
    group.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE", "pilotfish-system"),
        help="the webhook's own namespace (never injected; home of the certificate Secret)",
    )
    group.add_argument(
        "--offline-max-wait",
        type=int,
        default=30,
        metavar="SECONDS",
        help="agent default of PILOTFISH_OFFLINE_MAX_WAIT_SECONDS, used to size the grace period",
    )
    group.add_argument("--no-admission", action="store_true", help="do not serve /mutate")


def config_from_args(args: argparse.Namespace) -> InjectionConfig:
    return InjectionConfig(
        agent_image=args.agent_image,
        agent_version=args.agent_version,
        mount_mode=args.mount_mode,
        config_url=args.config_url,
        own_namespace=args.namespace,
        offline_max_wait_seconds=args.offline_max_wait,
    )
