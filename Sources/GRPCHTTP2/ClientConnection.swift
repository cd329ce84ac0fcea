// One client HTTP/2 connection: many unary calls multiplexed as streams, on the channel's loop.
//
// A call is submitted as HEADERS + one length-prefixed DATA frame with END_STREAM. The response's
// first HEADERS are the headers (or, with END_STREAM, Trailers-Only), DATA is assembled into
// messages, and the second HEADERS are the trailers. The call's outcome is decided when nghttp2
// closes the stream: grpc-status if the server sent one, else the HTTP status mapped as the spec
// says, else the RST_STREAM code.
import CNGHTTP2
import EventLoop
import RPCCore

/// A call in flight, owned by the channel's loop.
final class ClientCall {
    let id: UInt64
    let path: String
    let request: [UInt8]
    let options: CallOptions
    let deadline: ContinuousClock.Instant?
    private var continuation: CheckedContinuation<Result<UnaryResponse, RPCError>, Never>?
    var stream: Int32 = 0
    weak var connection: ClientConnection?
    var deadlineTimer: TimerID?
    /// Refused by a server that was going away: retried once on a new connection.
    var retried = false

    // The response as it arrives.
    var httpStatus: Int?
    var grpcStatus: Int?
    var grpcMessage = ""
    var headers = Metadata()
    var trailers = Metadata()
    var headersDone = false
    var assembler: MessageAssembler

    init(id: UInt64, path: String, request: [UInt8], options: CallOptions, maxResponseSize: Int,
         continuation: CheckedContinuation<Result<UnaryResponse, RPCError>, Never>) {
        self.id = id
        self.path = path
        self.request = request
        self.options = options
        self.deadline = options.timeout.map { ContinuousClock.now + $0 }
        self.continuation = continuation
        assembler = MessageAssembler(maxMessageSize: maxResponseSize)
    }

    var isFinished: Bool { continuation == nil }

    /// Told when the call is answered (the channel stops tracking it).
    var onFinish: ((UInt64) -> Void)?

    /// Resumes the caller exactly once.
    func finish(_ result: Result<UnaryResponse, RPCError>) {
        guard let continuation else { return }
        self.continuation = nil
        continuation.resume(returning: result)
        onFinish?(id)
        onFinish = nil
    }
}

final class ClientConnection: HTTP2Connection {
    let authority: String
    private var calls: [Int32: ClientCall] = [:]
    private var connecting = true
    /// Set when the server sent GOAWAY: no new calls go on this connection.
    private(set) var goingAway = false
    private let onConnected: (ClientConnection) -> Void
    private let onClosed: (ClientConnection) -> Void
    private let onRefused: (ClientCall) -> Void

    init(loop: EventLoop, fd: Int32, buffers: LoopBuffers, authority: String,
         onConnected: @escaping (ClientConnection) -> Void,
         onClosed: @escaping (ClientConnection) -> Void,
         onRefused: @escaping (ClientCall) -> Void) {
        self.authority = authority
        self.onConnected = onConnected
        self.onClosed = onClosed
        self.onRefused = onRefused
        super.init(loop: loop, fd: fd, buffers: buffers, server: false, settings: [
            (NGHTTP2_SETTINGS_ENABLE_PUSH, 0),
        ])
    }

    var isReady: Bool { !connecting && !goingAway && !isClosed }

    override func handleIO(_ events: IOEvents) {
        guard connecting else { return super.handleIO(events) }
        if let error = Socket.connectResult(fd) {
            failAll(RPCError(.unavailable, "cannot connect to \(authority): \(error)"))
            close()
            return
        }
        connecting = false
        flush()
        onConnected(self)
    }

    /// Starts a call on this connection (ready, on the loop).
    func startCall(_ call: ClientCall) {
        var headers: [HeaderField] = [
            (":method", "POST"), (":scheme", "http"), (":path", call.path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "food-platform-grpc/1.0"),
            ("grpc-accept-encoding", "identity"),
        ]
        if let deadline = call.deadline {
            let remaining = deadline - .now
            guard remaining > .zero else {
                call.finish(.failure(RPCError(.deadlineExceeded, "deadline exceeded before the call started")))
                return
            }
            headers.append(("grpc-timeout", GRPCTimeout.encode(remaining)))
            call.deadlineTimer = loop.schedule(after: remaining) { [weak self, weak call] in
                guard let self, let call else { return }
                self.abandon(call, RPCError(.deadlineExceeded, "deadline exceeded after \(call.options.timeout ?? .zero)"))
            }
        }
        headers += call.options.metadata.wireHeaders
        let stream = submitRequest(headers: headers, body: OutgoingBody(message: call.request))
        guard stream > 0 else {
            call.finish(.failure(RPCError(.unavailable, "cannot start a stream to \(authority) (error \(stream))")))
            return
        }
        call.stream = stream
        call.connection = self
        calls[stream] = call
        scheduleFlush()
    }

    /// Gives up on a call (deadline, cancellation): resets its stream and answers the caller now.
    func abandon(_ call: ClientCall, _ error: RPCError) {
        guard !call.isFinished else { return }
        if let timer = call.deadlineTimer { loop.cancel(timer) }
        call.finish(.failure(error))
        if calls.removeValue(forKey: call.stream) != nil {
            submitReset(stream: call.stream, errorCode: NGHTTP2_CANCEL)
            scheduleFlush()
        }
    }

    // MARK: - Response

    override func didReceiveHeader(stream: Int32, name: String, value: String) -> Bool {
        guard let call = calls[stream] else { return true }
        switch name {
        case ":status": call.httpStatus = Int(value)
        case "grpc-status": call.grpcStatus = Int(value)
        case "grpc-message": call.grpcMessage = StatusMessageEncoding.decode(value)
        default:
            guard !Metadata.isReserved(name) else { return true }
            // Before the first HEADERS frame ends these are headers; after, trailers.
            if call.headersDone {
                _ = call.trailers.addWireValue(name: name, value: value)
            } else {
                _ = call.headers.addWireValue(name: name, value: value)
            }
        }
        return true
    }

    override func didReceiveHeaders(stream: Int32, endStream: Bool) {
        guard let call = calls[stream] else { return }
        if endStream && !call.headersDone {
            // Trailers-Only: what arrived as headers are the trailers.
            call.trailers = call.headers
            call.headers = Metadata()
        }
        call.headersDone = true
    }

    override func didReceiveData(stream: Int32, bytes: UnsafeRawBufferPointer) {
        guard let call = calls[stream] else { return }
        do throws(MessageAssembler.Failure) {
            try call.assembler.append(bytes)
        } catch {
            let reason: RPCError = switch error {
            case .tooLarge(let length): RPCError(.resourceExhausted, "response message of \(length) bytes exceeds the limit")
            case .compressed: RPCError(.internal, "compressed response, but identity was asked for")
            }
            abandon(call, reason)
        }
    }

    override func streamDidClose(stream: Int32, errorCode: UInt32) {
        guard let call = calls.removeValue(forKey: stream) else { return }
        if let timer = call.deadlineTimer { loop.cancel(timer) }
        if errorCode == NGHTTP2_REFUSED_STREAM.rawValue, call.httpStatus == nil, !call.retried {
            // The server never saw it (GOAWAY or stream limit): safe to send again elsewhere.
            call.retried = true
            // Not from inside nghttp2's callback: the retry may open a connection.
            loop.schedule(after: .zero) { [onRefused] in onRefused(call) }
            return
        }
        call.finish(outcome(of: call, resetCode: errorCode))
    }

    private func outcome(of call: ClientCall, resetCode: UInt32) -> Result<UnaryResponse, RPCError> {
        if let status = call.grpcStatus {
            guard status == 0 else {
                let code = StatusCode(rawValue: status) ?? .unknown
                return .failure(RPCError(code, call.grpcMessage, metadata: call.trailers))
            }
            let messages = call.assembler.messages
            guard messages.count == 1, !call.assembler.hasPartialMessage else {
                return .failure(RPCError(.unimplemented, "expected one response message, got \(messages.count)"))
            }
            return .success(UnaryResponse(message: messages[0], headers: call.headers, trailers: call.trailers))
        }
        if let http = call.httpStatus, http != 200 {
            return .failure(RPCError(StatusCode(httpStatus: http), "HTTP status \(http) from \(authority)"))
        }
        if resetCode == NGHTTP2_REFUSED_STREAM.rawValue {
            return .failure(RPCError(.unavailable, "\(authority) refused the stream"))
        }
        if resetCode == NGHTTP2_CANCEL.rawValue {
            return .failure(RPCError(.cancelled, "\(authority) cancelled the stream"))
        }
        if resetCode != 0 {
            return .failure(RPCError(.internal, "\(authority) reset the stream (HTTP/2 error \(resetCode))"))
        }
        return .failure(RPCError(.internal, "\(authority) ended the stream without a grpc-status"))
    }

    override func didReceiveGoAway(lastStreamID: Int32) {
        goingAway = true
    }

    private func failAll(_ error: RPCError) {
        let open = calls.values
        calls.removeAll()
        for call in open {
            if let timer = call.deadlineTimer { loop.cancel(timer) }
            call.finish(.failure(error))
        }
    }

    override func connectionDidClose() {
        failAll(RPCError(.unavailable, "connection to \(authority) closed"))
        onClosed(self)
    }
}
