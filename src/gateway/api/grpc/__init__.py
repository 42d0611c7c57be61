"""The Open Inference Protocol over gRPC (KServe V2, `inference.GRPCInferenceService`).

- grpc_predict_v2.proto: the protocol's own definition; grpc_predict_v2_pb2*.py are generated
  from it with grpcio-tools (not needed at run time), from src/:

    python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. gateway/api/grpc/grpc_predict_v2.proto && sed -i 's/_descriptor_pool\\.Default()/_descriptor_pool.DescriptorPool()/' gateway/api/grpc/grpc_predict_v2_pb2.py

  The sed puts the messages in a descriptor pool of their own: tritonclient, MLServer and KServe
  define the same `inference.*` names in protobuf's default pool, and a second definition
  there fails the import in any process that loads both.
- convert.py: messages to and from the REST V2 path's shapes (one decode and encode path);
- status.py: the gateway's errors as gRPC status codes;
- servicer.py: the six calls, each as its REST route does it;
- server.py: a router replica's grpc.aio server, started and stopped with the replica.
"""
