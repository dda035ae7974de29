"""`cairnd` for other languages: Python's stock grpcio clients — health checking and server
reflection (`grpcio-reflection` speaks v1alpha) — over the Unix socket, against a real daemon."""

from __future__ import annotations

import pytest

from conftest import World

grpc = pytest.importorskip("grpc")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
reflection_db = pytest.importorskip("grpc_reflection.v1alpha.proto_reflection_descriptor_database")

AUTHORITIES = [None, "localhost", "cairnd.example:50051"]


def channel(world: World, authority: str | None):  # type: ignore[no-untyped-def]
    opts = [] if authority is None else [("grpc.default_authority", authority)]
    return grpc.insecure_channel(f"unix:{world.socket}", options=opts)


@pytest.mark.parametrize("authority", AUTHORITIES, ids=lambda a: a or "grpcio-default")
def test_health_answers_serving(world: World, authority: str | None) -> None:
    with channel(world, authority) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ["", "cairn.v1.Cairn"]:
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING, service


@pytest.mark.parametrize("authority", AUTHORITIES, ids=lambda a: a or "grpcio-default")
def test_reflection_v1alpha_describes_the_cairn_service(world: World, authority: str | None) -> None:
    with channel(world, authority) as ch:
        db = reflection_db.ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"cairn.v1.Cairn", "grpc.health.v1.Health"} <= services
        fd = db.FindFileContainingSymbol("cairn.v1.Cairn")
        methods = {m.name for s in fd.service for m in s.method if s.name == "Cairn"}
        assert {"Resolve", "Fetch", "Publish", "Stats"} <= methods


def test_reflection_v1_answers_too(world: World) -> None:
    """grpcurl's version: v1's messages are v1alpha's under another package name, so v1alpha's
    generated classes serialize them."""
    pb = pytest.importorskip("grpc_reflection.v1alpha.reflection_pb2")
    with channel(world, None) as ch:
        call = ch.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=pb.ServerReflectionRequest.SerializeToString,
            response_deserializer=pb.ServerReflectionResponse.FromString,
        )
        (resp,) = list(call(iter([pb.ServerReflectionRequest(list_services="")]), timeout=10))
        names = {s.name for s in resp.list_services_response.service}
        assert {"cairn.v1.Cairn", "grpc.health.v1.Health"} <= names
