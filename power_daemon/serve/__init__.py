"""The daemon's adapters to the outside: the gRPC server and service (server, service, codec),
TLS that reloads (tls), the local marker socket (local_socket) and its own /metrics (metrics)."""
