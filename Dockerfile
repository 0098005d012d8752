# jobwheel server image: SQLite in /data by default; set JOBWHEEL_DB for PostgreSQL.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY client ./client
RUN pip install --no-cache-dir --prefix=/install ".[server]"

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /data jobwheel \
    && mkdir -p /data && chown jobwheel /data
USER jobwheel
WORKDIR /data
ENV JOBWHEEL_LISTEN=0.0.0.0:50051 \
    JOBWHEEL_DB=sqlite:////data/jobwheel.db \
    PYTHONUNBUFFERED=1
EXPOSE 50051
VOLUME ["/data"]
# grpc.health.v1 reports NOT_SERVING while draining or while the database cannot be reached;
# the check asks the address in JOBWHEEL_LISTEN, whatever it is set to, with TLS when the server
# has it (JOBWHEEL_TLS_CERT)
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "jobwheel.server.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["jobwheel-server"]
