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
# grpc.health.v1 reports NOT_SERVING while draining, so the check fails during shutdown
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import grpc, sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ch = grpc.insecure_channel('127.0.0.1:50051'); r = g.HealthStub(ch).Check(h.HealthCheckRequest(), timeout=2); sys.exit(r.status != h.HealthCheckResponse.SERVING)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["jobwheel-server"]
