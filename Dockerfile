# mmproxy in a container (README, "Docker"):
#   docker build -t mmproxy .
#   docker run -p 4000:4000 -v "$PWD/config.yaml:/config/config.yaml:ro" mmproxy
# Both stages are Debian bookworm, so the wheel's manylinux tag (from the builder's glibc) fits the runtime.
# Plain Dockerfile syntax (no BuildKit mounts): it builds with the classic builder, BuildKit and podman alike.

# -- builder: Rust and Python; maturin builds the one abi3 wheel (every CPython >= 3.10) ----------------------
FROM rust:1-slim-bookworm AS builder
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
# Debian's Python is externally managed (PEP 668): maturin goes into a venv of its own.
RUN python3 -m venv /opt/maturin && /opt/maturin/bin/pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs pyproject.toml README.md ./
COPY rust ./rust
COPY python ./python
RUN /opt/maturin/bin/maturin build --release --locked --out /src/dist

# -- runtime: slim Python, the wheel and its dependencies, no compiler --------------------------------------
FROM python:3.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=builder /src/dist /tmp/dist
RUN pip install --no-cache-dir /tmp/dist/mmproxy-*.whl && rm -rf /tmp/dist
# An unprivileged user. Its working directory holds the default SQLite ledger (mmproxy.db), the ledger's spool
# (mmproxy-spool) and uploaded files (mmproxy-files): mount a volume at /data to keep them across containers.
RUN groupadd --gid 10001 mmproxy \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home --home-dir /data --shell /usr/sbin/nologin \
        mmproxy \
    && install -d -o mmproxy -g mmproxy /data
# Numeric, so a runtime that checks runAsNonRoot can tell it is not root.
USER 10001:10001
WORKDIR /data
EXPOSE 4000
# The slim image has no curl; Python's urllib raises (exit 1) on a refused connection or a non-2xx status.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/health/liveliness', timeout=4)"]
ENTRYPOINT ["mmproxy"]
# All interfaces: inside a container, a server on 127.0.0.1 cannot be reached through the published port.
CMD ["serve", "--config", "/config/config.yaml", "--host", "0.0.0.0"]
