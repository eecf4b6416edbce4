import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Kubernetes' gRPC probes ask the same: grpc.health.v1, service "" (the server).
with grpc.insecure_channel("localhost:8081") as channel:
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
