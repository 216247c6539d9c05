# The cluster-side server (admission webhook + config service).
# Build from the repository root:
#   docker build -f deploy/docker/webhook.Dockerfile -t ghcr.io/pilotfish/webhook:0.1.0 .
# Dependencies are installed with requirements/dev.txt as *constraints*, so the image gets
# exactly the versions the test suite ran with, but only the `webhook` extra's packages.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/dev.txt requirements/dev.txt
COPY webhook webhook
RUN python -m venv /opt/pilotfish \
 && /opt/pilotfish/bin/pip install --no-cache-dir --disable-pip-version-check \
      --constraint requirements/dev.txt ".[webhook]"

FROM python:3.11-slim
COPY --from=build /opt/pilotfish /opt/pilotfish
ENV PATH=/opt/pilotfish/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric user, so runAsNonRoot can be verified by the kubelet (restricted PSS).
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["pilotfish-webhook"]
CMD ["serve", "--listen=0.0.0.0:8443", "--certs-dir=/certs"]
