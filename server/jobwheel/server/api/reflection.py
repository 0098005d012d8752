"""gRPC server reflection, v1 and v1alpha, serving the proto comments too.

grpcio-reflection implements only grpc.reflection.v1alpha, and it rebuilds file descriptors
from the runtime pool, which keeps no comments. This servicer reuses it and then replaces
jobwheel's files with the ones `make gen` wrote with source info
(client/jobwheel/v1/descriptors.binpb), so `grpcurl describe` shows the documentation. v1 has
the same messages as v1alpha under another package name (the wire format is identical), so
one servicer answers both.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_FILE = "grpc/reflection/v1/reflection.proto"


def documented_files() -> dict[str, bytes]:
    """jobwheel's FileDescriptorProtos with source info (comments), by file name."""
    data = importlib.resources.files("jobwheel.v1").joinpath("descriptors.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    for f in files:
        _drop_json_names(f.message_type)
    return {f.name: f.SerializeToString() for f in files}


def _drop_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """protoc fills in json_name; the runtime pool does not. Serving them would change how
    grpcurl prints (camelCase instead of the proto names the README shows)."""
    for message in messages:
        for fld in message.field:
            fld.ClearField("json_name")
        _drop_json_names(message.nested_type)


class Reflection(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    def __init__(self, service_names: Iterable[str]) -> None:
        super().__init__(service_names)
        self._documented = documented_files()

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        # the runtime pool (upb) finds no method by its name: `grpcurl describe
        # jobwheel.v1.JobService.CancelJobs` answered "Symbol not found"; its service's file
        # holds it
        parent, _, name = fully_qualified_name.rpartition(".")
        try:
            self._pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            try:
                if name in self._pool.FindServiceByName(parent).methods_by_name:
                    fully_qualified_name = parent
            except KeyError:
                pass
        return super()._file_containing_symbol(request, fully_qualified_name)

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                protos = response.file_descriptor_response.file_descriptor_proto
                for i, serialized in enumerate(protos):
                    name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
                    protos[i] = self._documented.get(name, serialized)
            yield response


def _register_v1_descriptor() -> None:
    """Puts grpc/reflection/v1/reflection.proto in the default pool (v1alpha's file under the
    v1 package), so that clients can resolve the v1 service they were told about."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    v1 = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    v1.name, v1.package = V1_FILE, "grpc.reflection.v1"
    v1.ClearField("options")
    for message in v1.message_type:
        for fld in message.field:
            if fld.HasField("type_name"):  # assigning '' would mark a scalar as typed
                fld.type_name = fld.type_name.replace(old, new)
    for service in v1.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(v1.SerializeToString())


def enable(service_names: Iterable[str], server: Any) -> None:
    """Serves reflection (both versions) for `service_names` and the two reflection
    services themselves."""
    _register_v1_descriptor()
    servicer = Reflection((*service_names, V1ALPHA_SERVICE, V1_SERVICE))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    # both ways, as generated code adds a service (api/rpc_stack.py collects the second)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, v1),))
    server.add_registered_method_handlers(V1_SERVICE, v1)
