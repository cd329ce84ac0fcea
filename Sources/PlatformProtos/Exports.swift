// Users of the messages also need the core gRPC types the generated code names.
@_exported import RPCCore
