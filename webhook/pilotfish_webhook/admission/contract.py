"""Names that are API (docs/reference.md): labels, annotations, env vars, port, paths.

Kept in one module so a rename is one deliberate edit and tests can import the same
constants the mutation uses. Changing any value here breaks running agents or user YAML.
"""

from __future__ import annotations

# Selection (namespace and pod labels).
INJECT_LABEL = "pilotfish.io/inject"
NAMESPACE_ENABLED = "enabled"

# Pod labels read by the webhook.
APP_LABEL = "pilotfish.io/app"
TAG_LABEL = "pilotfish.io/tag"
MSE_TAG_LABEL = "alicloud.service.tag"  # migration alias for MSE users

# Pod annotations.
CONTAINERS_ANNOTATION = "pilotfish.io/containers"
PYTHONPATH_ANNOTATION = "pilotfish.io/pythonpath"
AGENT_VERSION_ANNOTATION = "pilotfish.io/agent-version"
STATUS_ANNOTATION = "pilotfish.io/status"  # written by the webhook
KUBECTL_DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

# What the webhook adds to a pod.
AGENT_VOLUME = "pilotfish-agent"
TOKEN_VOLUME = "pilotfish-token"
STATE_VOLUME = "pilotfish-state"  # small writable emptyDir: the agent's cache and markers
INIT_CONTAINER = "pilotfish-init"
MOUNT_PATH = "/pilotfish"
BOOTSTRAP_DIR = "/pilotfish/bootstrap"
TOKEN_DIR = "/var/run/secrets/pilotfish"
TOKEN_FILE = TOKEN_DIR + "/token"
CA_FILE = TOKEN_DIR + "/ca.crt"
STATE_MOUNT = "/pilotfish-state"  # PILOTFISH_STATE_DIR of every injected container
CA_CONFIGMAP = "pilotfish-ca"  # published per namespace by the in-cluster certificate loop
TOKEN_AUDIENCE = "pilotfish"

# Agent status server (MSE's readiness port, so runbooks carry over).
STATUS_PORT = 55199
READINESS_PATH = "/readiness"
OFFLINE_PATH = "/offline"
OFFLINE_TOKEN_HEADER = "X-Pilotfish-Token"

# Env vars injected by the webhook.
ENV_PYTHONPATH = "PYTHONPATH"
ENV_APP = "PILOTFISH_APP"
ENV_TAG = "PILOTFISH_TAG"
ENV_CONFIG_URL = "PILOTFISH_CONFIG_URL"
ENV_CONFIG_CA = "PILOTFISH_CONFIG_CA"
ENV_TOKEN_FILE = "PILOTFISH_TOKEN_FILE"
ENV_POD_NAME = "PILOTFISH_POD_NAME"
ENV_POD_NAMESPACE = "PILOTFISH_POD_NAMESPACE"
ENV_POD_IP = "PILOTFISH_POD_IP"
ENV_OFFLINE_TOKEN = "PILOTFISH_OFFLINE_TOKEN"
ENV_APP_PROBE = "PILOTFISH_APP_PROBE"
ENV_STATE_DIR = "PILOTFISH_STATE_DIR"
# Read (not written) by the webhook to size the grace period.
ENV_OFFLINE_MAX_WAIT = "PILOTFISH_OFFLINE_MAX_WAIT_SECONDS"
ENV_STATUS_PORT = "PILOTFISH_STATUS_PORT"
# The kill switch, read (not written): a container that literally turns the agent off is left alone.
ENV_ENABLED = "PILOTFISH_ENABLED"
# Values of PILOTFISH_ENABLED that turn the agent off (the agent's bootstrap reads the same list).
DISABLED_VALUES = ("0", "false", "no", "off", "disabled")
