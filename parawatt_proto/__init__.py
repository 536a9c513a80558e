"""Generated gRPC/protobuf code for parawatt (made by scripts/gen_proto.sh from proto/)."""
