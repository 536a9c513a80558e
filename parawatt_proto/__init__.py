"""The contract package: what the daemon, the collector, the trainer and the parawatt client
library share, since none of them may import another (tests/test_layout.py).

Generated (scripts/gen_proto.sh from proto/; never edited by hand):
    parawatt_pb2, parawatt_pb2_grpc   the gRPC/protobuf messages and service.
Hand-written, about the contract:
    records    plain records of the wire messages (DeviceRec, NodeRec, ReadingRec, MarkerRec,
               RunConfigRec); standard library only.
    convert    the one mapping between the messages and those records, both directions.
    fields     field lists and enum names, checked against the descriptors.
    limits, validate, ownership   input limits, marker intake rules, run ownership.
    transport, webconfig, cli_args, device_metrics   shared client/server plumbing.
Imports point inward only: nothing here imports power_daemon, collector, trainer or parawatt.
"""
