// The outcome of a gRPC call: a status code and a message, as the gRPC spec defines them.
// Transport-agnostic: the HTTP/2 layer turns these into `grpc-status`/`grpc-message` trailers and
// back, services throw them, clients catch them.

/// A gRPC status code (the numbering is part of the wire contract).
public enum StatusCode: Int, Sendable, CaseIterable, CustomStringConvertible {
    case ok = 0
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16

    /// The canonical upper-case name, e.g. `NOT_FOUND`.
    public var description: String {
        switch self {
        case .ok: "OK"
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        }
    }
}

/// A failed call: what a handler throws and what a client catches.
public struct RPCError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String
    /// Trailing metadata sent (server) or received (client) with the status.
    public var metadata: Metadata

    public init(_ code: StatusCode, _ message: String = "", metadata: Metadata = Metadata()) {
        self.code = code
        self.message = message
        self.metadata = metadata
    }

    public var description: String { message.isEmpty ? "\(code)" : "\(code): \(message)" }

    /// Maps any error a handler throws to the status the client sees: an `RPCError` as it is,
    /// a cancellation as CANCELLED, anything else as UNKNOWN (as gRPC implementations do).
    public init(from error: any Error) {
        switch error {
        case let error as RPCError: self = error
        case is CancellationError: self.init(.cancelled, "the call was cancelled")
        default: self.init(.unknown, String(describing: error))
        }
    }
}
