"""The baseline: a bare grpc.aio server whose EnqueueJob echoes the request, storing nothing,
and whose GetJob and ListJobs answer a fixed job (a page of it), reading nothing.

It serves the same method with the same message types as jobwheel, so one client drives both
and the difference is what jobwheel does per call (validate, commit, convert). The server is
set up as jobwheel's is: its methods served through one generic handler (api/rpc_stack.py),
and the same interpreter settings (interpreter.py: the garbage collector, the GIL).
Run as `python -m bench.echo_server`; it logs "echo listening on 127.0.0.1:PORT" on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

import grpc
from jobwheel.server import interpreter
from jobwheel.server.api.rpc_stack import MethodCollector, serve_by_method
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb


class EchoJobService(job_service_pb2_grpc.JobServiceServicer):
    async def EnqueueJob(self, request: pb.EnqueueJobRequest, context: Any) -> Any:
        job = job_pb2.Job(task=request.task, queue=request.queue or "default")
        job.payload.CopyFrom(request.payload)
        return pb.EnqueueJobResponse(job=job)

    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> Any:
        return pb.GetJobResponse(job=_STORED_JOB)

    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> Any:
        return pb.ListJobsResponse(jobs=[_STORED_JOB] * (request.page_size or 50))


# what the echo's GetJob answers: a job as a read finds one (the fields a queued job holds)
_STORED_JOB = job_pb2.Job(
    id="018f6a7e-0000-7000-8000-000000000000",
    queue="default",
    task="bench.stored_only",
    state=job_pb2.JOB_STATE_QUEUED,
)
_STORED_JOB.payload.update({"n": 0})
_STORED_JOB.create_time.FromMicroseconds(1_700_000_000_000_000)
_STORED_JOB.update_time.FromMicroseconds(1_700_000_000_000_000)
_STORED_JOB.next_run_time.FromMicroseconds(1_700_000_000_000_000)


async def serve() -> None:
    server = grpc.aio.server()
    methods = MethodCollector()
    job_service_pb2_grpc.add_JobServiceServicer_to_server(EchoJobService(), methods)
    serve_by_method(server, methods.handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    interpreter.tune_for_serving()
    print(f"echo listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
