"""gRPC: the Open Inference Protocol's GRPCInferenceService and grpc.health.v1, per worker."""
