// The client's public face: a channel to one target, shared by any number of tasks.
//
// All state lives on one event loop. The channel keeps one HTTP/2 connection and multiplexes
// every call over it; it connects lazily on the first call, queues calls while connecting, and
// after the connection is lost or the server sent GOAWAY the next call opens a new one. Unary
// callers await a continuation resumed from the loop; streaming callers talk to the loop through
// the call's two queues (MessageStreams.swift). Cancelling the caller's task resets the stream.
import CNGHTTP2
import EventLoop
import RPCCore
import Synchronization

/// Client settings.
public struct ClientConfiguration: Sendable {
    /// Covers the TCP connect and, with TLS, the handshake.
    public var connectTimeout: Duration = .seconds(5)
    /// Largest response message accepted.
    public var maxResponseSize = 4 * 1024 * 1024
    /// TLS (h2 by ALPN, the server's certificate and name verified); nil speaks h2c.
    public var tls: ClientTLSConfiguration?

    public init() {}
}

/// A multiplexed gRPC client connection to `host:port`; safe to share between tasks.
public final class GRPCChannel: ClientTransport, Sendable {
    public let host: String
    public let port: Int
    private let loop: EventLoop
    private let ownsLoop: Bool
    private let state: LoopBound<ChannelState>
    private let nextCallID = Atomic<UInt64>(0)
    private let closing = OnceFlag()

    /// Uses `eventLoop` if given, else a loop of its own (stopped by `close`).
    public init(host: String, port: Int, configuration: ClientConfiguration = ClientConfiguration(), eventLoop: EventLoop? = nil) {
        self.host = host
        self.port = port
        ownsLoop = eventLoop == nil
        loop = eventLoop ?? EventLoop(name: "grpc-client-\(host):\(port)")
        state = LoopBound(ChannelState(loop: loop, host: host, port: port, configuration: configuration), loop: loop)
        ignoreSIGPIPE()
    }

    /// "host:port", as errors name it.
    public var target: String { "\(host):\(port)" }

    public func unary(path: String, request: [UInt8], options: CallOptions) async throws(RPCError) -> UnaryResponse {
        guard !closing.isSet else {
            throw RPCError(.unavailable, "the channel to \(target) is closed")
        }
        let id = nextCallID.add(1, ordering: .relaxed).newValue
        let state = self.state
        // Set by the cancellation handler; `start` reads it, because a cancellation can arrive
        // before the call exists on the loop (the handler then runs before `start` is queued).
        let cancelled = OnceFlag()
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<UnaryResponse, RPCError>, Never>) in
                state.loop.execute {
                    guard !cancelled.isSet else {
                        continuation.resume(returning: .failure(RPCError(.cancelled, "the call was cancelled")))
                        return
                    }
                    state.value.start(id: id, path: path, request: request, options: options, continuation: continuation)
                }
            }
        } onCancel: {
            cancelled.set()
            state.loop.execute { state.value.cancel(id: id) }
        }
        return try result.get()
    }

    public func withStream<Result: Sendable>(
        path: String, options: CallOptions, _ body: (any ClientStream) async throws -> Result
    ) async throws -> Result {
        guard !closing.isSet else {
            throw RPCError(.unavailable, "the channel to \(target) is closed")
        }
        let id = nextCallID.add(1, ordering: .relaxed).newValue
        let state = self.state
        let inbound = StreamInbound(onCredit: { state.loop.execute { state.value.releaseHeldBack(id: id) } })
        let outbound = StreamOutbound(kick: {
            if state.loop.inEventLoop {
                state.value.resumeBody(id: id)
            } else {
                state.loop.execute { state.value.resumeBody(id: id) }
            }
        })
        let parts = StreamingCallParts(inbound: inbound, outbound: outbound)
        state.loop.execute { state.value.startStream(id: id, path: path, parts: parts, options: options) }
        // However the body ends, a call still open is reset: nobody will read it any more.
        defer { state.loop.execute { state.value.cancel(id: id) } }
        return try await withTaskCancellationHandler {
            try await body(parts)
        } onCancel: {
            state.loop.execute { state.value.cancel(id: id) }
        }
    }

    /// Closes the connection; calls in flight fail with UNAVAILABLE.
    public func close() {
        guard closing.set() else { return }
        let state = self.state
        if loop.inEventLoop {
            state.value.close()
        } else {
            loop.execute { state.value.close() }
        }
        if ownsLoop, !loop.inEventLoop { loop.shutdownGracefully() }
    }
}

/// The channel's loop-confined state: the current connection and the calls in flight.
final class ChannelState {
    private let loop: EventLoop
    private let host: String
    private let port: Int
    private let configuration: ClientConfiguration
    private var connection: ClientConnection?
    private var waiting: [ClientCall] = []
    private var calls: [UInt64: ClientCall] = [:]
    private var connectTimer: TimerID?
    private var closed = false
    private let buffers = LoopBuffers()

    init(loop: EventLoop, host: String, port: Int, configuration: ClientConfiguration) {
        self.loop = loop
        self.host = host
        self.port = port
        self.configuration = configuration
    }

    private var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    func start(id: UInt64, path: String, request: [UInt8], options: CallOptions,
               continuation: CheckedContinuation<Result<UnaryResponse, RPCError>, Never>) {
        let call = ClientCall(id: id, path: path, request: request, options: options,
                              maxResponseSize: configuration.maxResponseSize, continuation: continuation)
        guard !closed else {
            call.finish(.failure(RPCError(.unavailable, "the channel to \(authority) is closed")))
            return
        }
        calls[id] = call
        call.onFinish = { [weak self] id in self?.calls[id] = nil }
        dispatch(call)
    }

    func startStream(id: UInt64, path: String, parts: StreamingCallParts, options: CallOptions) {
        let call = ClientCall(id: id, path: path, streaming: parts, options: options,
                              maxResponseSize: configuration.maxResponseSize)
        guard !closed else {
            call.finish(.failure(RPCError(.unavailable, "the channel to \(authority) is closed")))
            return
        }
        calls[id] = call
        call.onFinish = { [weak self] id in self?.calls[id] = nil }
        dispatch(call)
    }

    /// The caller wrote to a streaming call whose body had deferred.
    func resumeBody(id: UInt64) {
        guard let call = calls[id], call.stream > 0 else { return }
        call.connection?.resumeBody(stream: call.stream)
    }

    /// The caller drained a streaming call's responses.
    func releaseHeldBack(id: UInt64) {
        guard let call = calls[id] else { return }
        call.connection?.releaseHeldBack(call)
    }

    private func dispatch(_ call: ClientCall) {
        guard !closed else {
            call.finish(.failure(RPCError(.unavailable, "the channel to \(authority) is closed")))
            return
        }
        if let connection, connection.isReady {
            connection.startCall(call)
            return
        }
        waiting.append(call)
        if connection == nil || connection!.goingAway || connection!.isClosed { connect() }
    }

    private func connect() {
        let previous = connection
        connection = nil
        _ = previous  // a going-away connection finishes its own streams and closes itself
        let fd: Int32
        do {
            fd = try Socket.connect(host: host, port: port)
        } catch {
            failWaiting(RPCError(.unavailable, "cannot connect to \(authority): \(error)"))
            return
        }
        var session: TLSSession?
        if let tls = configuration.tls {
            do {
                session = try tls.makeSession(fd: fd, host: host)
            } catch {
                Socket.close(fd)
                failWaiting(RPCError(.unavailable, "cannot connect to \(authority): \(error)"))
                return
            }
        }
        let fresh = ClientConnection(
            loop: loop, fd: fd, buffers: buffers, authority: authority, tls: session,
            onConnected: { [weak self] connection in self?.connected(connection) },
            onClosed: { [weak self] connection in self?.connectionClosed(connection) },
            onRefused: { [weak self] call in self?.retry(call) })
        connection = fresh
        fresh.start(awaitingConnect: true)
        connectTimer = loop.schedule(after: configuration.connectTimeout) { [weak self, weak fresh] in
            guard let self, let fresh, self.connection === fresh, !fresh.isReady else { return }
            let step = fresh.inTLSHandshake ? "in the TLS handshake with" : "connecting to"
            self.failWaiting(RPCError(.unavailable, "timed out \(step) \(self.authority)"))
            fresh.close()
        }
    }

    private func connected(_ connection: ClientConnection) {
        guard connection === self.connection else { return }
        if let connectTimer { loop.cancel(connectTimer) }
        let ready = waiting
        waiting = []
        for call in ready { connection.startCall(call) }
    }

    private func connectionClosed(_ closedConnection: ClientConnection) {
        // Its calls were answered UNAVAILABLE by the connection itself.
        guard closedConnection === connection else { return }
        connection = nil
        if let connectTimer { loop.cancel(connectTimer) }
        // Calls queued behind a failed connect fail with the connect error, said once.
        failWaiting(RPCError(.unavailable, "cannot connect to \(authority): \(closedConnection.closeReason ?? "connection closed")"))
    }

    private func retry(_ call: ClientCall) {
        guard !call.isFinished else { return }
        dispatch(call)
    }

    func cancel(id: UInt64) {
        guard let call = calls[id] else { return }
        if let index = waiting.firstIndex(where: { $0 === call }) { waiting.remove(at: index) }
        let error = RPCError(.cancelled, "the call was cancelled")
        if let connection = call.connection {
            connection.abandon(call, error)
        } else {
            call.finish(.failure(error))
        }
    }

    func close() {
        closed = true
        failWaiting(RPCError(.unavailable, "the channel to \(authority) is closed"))
        connection?.close()
        connection = nil
        // Calls on an earlier, going-away connection or waiting for a retry end here too.
        for call in Array(calls.values) {
            call.connection?.abandon(call, RPCError(.unavailable, "the channel to \(authority) is closed"))
            call.finish(.failure(RPCError(.unavailable, "the channel to \(authority) is closed")))
        }
    }


    private func failWaiting(_ error: RPCError) {
        let failed = waiting
        waiting = []
        for call in failed { call.finish(.failure(error)) }
    }
}
