# LLM-Sentinel's image: docker build -t llm-sentinel:0.1.0 .
# Two stages: the build stage installs the package into a virtual environment, the runtime stage copies
# only that environment onto the same pinned base and runs as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/sentinel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sentinel ./sentinel
COPY flows ./flows
COPY operators ./operators
COPY detectors ./detectors
COPY sinks ./sinks
COPY sources ./sources
COPY simulator ./simulator
RUN /opt/sentinel/bin/pip install '.[api]' && /opt/sentinel/bin/sentinel --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llm-sentinel" \
      org.opencontainers.image.description="Streaming anomaly detection for LLM applications, on Bytewax" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 sentinel \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sentinel --no-create-home \
            --shell /usr/sbin/nologin sentinel \
 && mkdir -p /var/lib/sentinel \
 && chown 10001:10001 /var/lib/sentinel
COPY --from=build /opt/sentinel /opt/sentinel
ENV PATH=/opt/sentinel/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/sentinel
# 9464: /metrics, /healthz, /readyz; 2101: the Bytewax cluster.
EXPOSE 9464 2101
ENTRYPOINT ["sentinel"]
CMD ["run"]
