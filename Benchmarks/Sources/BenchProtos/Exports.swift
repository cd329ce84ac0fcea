// Generated code and its users speak RPCCore's types (RPCError, ServerContext, RPCWriter, ...).
@_exported import RPCCore
