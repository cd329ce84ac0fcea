// The gRPC server: listens on one address, serves a set of services on a group of event loops.
//
// The listening socket is registered with every loop; whichever loop wins `accept` owns the new
// connection for its whole life (no locks on the request path). Handlers run as Tasks on Swift's
// cooperative pool, so a slow handler (awaiting Redis) never holds a loop thread.
// Shutdown: stop accepting, GOAWAY every connection, let the RPCs in flight finish within the
// grace period, then close what is left. The server serves exactly the services it is given: the
// health and reflection services are ordinary ones (module GRPCServices), so the caller flips
// health to NOT_SERVING (`runUntilTerminated`'s `beforeShutdown`) before the drain begins.
import CNGHTTP2
@preconcurrency import Dispatch
import EventLoop
import Logging
import RPCCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Server settings, with the defaults of the gRPC ecosystem where it has one.
public struct ServerConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Event loop threads; one per core by default.
    public var loopCount: Int
    /// Largest request message accepted (RESOURCE_EXHAUSTED above it).
    public var maxMessageSize = 4 * 1024 * 1024
    public var maxConcurrentStreams: UInt32 = 256
    public var maxHeaderListSize = 16 * 1024
    /// A connection with no open stream for this long is sent GOAWAY and closed.
    public var idleTimeout: Duration = .seconds(300)
    /// Connections beyond this are closed as soon as they are accepted.
    public var maxConnections = 4096
    /// How long in-flight RPCs may run after a shutdown begins.
    public var shutdownGracePeriod: Duration = .seconds(10)

    public init(host: String = "0.0.0.0", port: Int, loopCount: Int = EventLoopGroup.defaultLoopCount) {
        self.host = host
        self.port = port
        self.loopCount = loopCount
    }
}

/// What every connection of one server shares; immutable or atomic, so safe across loops.
final class ServerCore: Sendable {
    let configuration: ServerConfiguration
    let router: Router
    let logger: Logger
    let connectionCount = Atomic<Int>(0)
    let shuttingDown: OnceFlag

    init(configuration: ServerConfiguration, router: Router, shuttingDown: OnceFlag, logger: Logger) {
        self.configuration = configuration
        self.router = router
        self.shuttingDown = shuttingDown
        self.logger = logger
    }
}

/// A flag set once, from any thread: shutdown has begun, a caller's task was cancelled.
final class OnceFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    /// Sets the flag; returns false if it was already set.
    @discardableResult
    func set() -> Bool { !value.exchange(true, ordering: .relaxed) }
}

/// A gRPC server over HTTP/2 (h2c, prior knowledge) serving methods of all four kinds.
public final class GRPCServer: Sendable {
    private let core: ServerCore
    private let group: EventLoopGroup
    private let listeners = Mutex<[LoopBound<Listener>]>([])
    private let boundPort = Atomic<Int>(0)
    private let listenFD = Atomic<Int32>(-1)

    /// `interceptors` run before every handler (authorization, say), in order.
    public init(configuration: ServerConfiguration, services: [ServiceDefinition],
                interceptors: [any ServerInterceptor] = [], logger: Logger = Logger(label: "grpc")) {
        core = ServerCore(configuration: configuration, router: Router(services, interceptors: interceptors),
                          shuttingDown: OnceFlag(), logger: logger)
        group = EventLoopGroup(loopCount: configuration.loopCount, name: "grpc")
    }

    /// The port actually listened on (useful with port 0).
    public var port: Int { boundPort.load(ordering: .relaxed) }

    /// Binds and starts serving. Throws when the address cannot be bound.
    public func start() throws(SocketError) {
        ignoreSIGPIPE()
        let (fd, port) = try Socket.listen(host: core.configuration.host, port: core.configuration.port)
        boundPort.store(port, ordering: .relaxed)
        listenFD.store(fd, ordering: .relaxed)
        let bound = group.loops.map { loop in
            let listener = LoopBound(Listener(loop: loop, fd: fd, core: core), loop: loop)
            loop.execute { listener.value.start() }
            return listener
        }
        listeners.withLock { $0 = bound }
        core.logger.info("serving", metadata: ["address": "\(core.configuration.host):\(port)",
                                                "services": "\(core.router.serviceNames.joined(separator: ","))"])
    }

    /// Stops accepting, drains connections with GOAWAY, waits for in-flight RPCs up to the grace
    /// period, then closes everything and stops the loops.
    public func shutdown(gracePeriod: Duration? = nil) async {
        guard core.shuttingDown.set() else { return }
        let grace = gracePeriod ?? core.configuration.shutdownGracePeriod
        let all = listeners.withLock { $0 }
        // Every loop stops watching the socket; then it is closed, so new connections are
        // refused by the kernel instead of queueing where nobody will serve them.
        for listener in all {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                listener.loop.execute { listener.value.stopAccepting(); done.resume() }
            }
        }
        let fd = listenFD.exchange(-1, ordering: .relaxed)
        if fd >= 0 { Socket.close(fd) }
        for listener in all { listener.loop.execute { listener.value.drainConnections() } }
        let deadline = ContinuousClock.now + grace
        while core.connectionCount.load(ordering: .relaxed) > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        for listener in all { listener.loop.execute { listener.value.forceCloseAll() } }
        while core.connectionCount.load(ordering: .relaxed) > 0 {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let group = self.group
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            // Joining loop threads blocks: keep that off the cooperative pool.
            Thread.detach { group.shutdownGracefully(); done.resume() }
        }
        core.logger.info("stopped")
    }

    /// Serves until SIGTERM or SIGINT, runs `beforeShutdown` (health goes NOT_SERVING, long
    /// watches end), then shuts down gracefully.
    public func runUntilTerminated(beforeShutdown: @Sendable () async -> Void = {}) async {
        let signals = SignalWaiter([SIGTERM, SIGINT])
        let signal = await signals.next()
        core.logger.info("shutting down", metadata: ["signal": "\(signal)"])
        await beforeShutdown()
        await shutdown()
    }
}

/// Accepts connections on one loop and remembers them, for draining.
final class Listener: IOHandler {
    let loop: EventLoop
    let fd: Int32
    private let core: ServerCore
    private var connections: [ObjectIdentifier: ServerConnection] = [:]
    private var accepting = false
    /// This loop's I/O buffers, lent to each of its connections in turn.
    private let buffers = LoopBuffers()

    init(loop: EventLoop, fd: Int32, core: ServerCore) {
        self.loop = loop
        self.fd = fd
        self.core = core
    }

    func start() {
        accepting = true
        loop.register(fd, for: .read, handler: self)
    }

    func handleIO(_ events: IOEvents) {
        while accepting {
            let client: Int32
            switch Socket.accept(fd) {
            case .connection(let accepted):
                client = accepted
            case .none:
                return
            case .outOfDescriptors:
                core.logger.error("out of file descriptors: pausing accepts for 100 ms")
                stopAccepting()
                loop.schedule(after: .milliseconds(100)) { [weak self] in
                    guard let self, !self.core.shuttingDown.isSet else { return }
                    self.start()
                }
                return
            }
            // Count first, then check, so loops racing for the last slot cannot both take it.
            if core.connectionCount.add(1, ordering: .relaxed).newValue > core.configuration.maxConnections {
                core.connectionCount.subtract(1, ordering: .relaxed)
                core.logger.warning("connection limit reached, closing new connection",
                                    metadata: ["limit": "\(core.configuration.maxConnections)"])
                Socket.close(client)
                continue
            }
            let connection = ServerConnection(loop: loop, fd: client, buffers: buffers, core: core)
            let key = ObjectIdentifier(connection)
            connections[key] = connection
            connection.onClose = { [unowned self, core] in
                self.connections[key] = nil
                core.connectionCount.subtract(1, ordering: .relaxed)
            }
            connection.start()
        }
    }

    func stopAccepting() {
        guard accepting else { return }
        accepting = false
        loop.deregister(fd)
    }

    func drainConnections() {
        for connection in connections.values { connection.drain() }
    }

    func forceCloseAll() {
        for connection in Array(connections.values) { connection.forceClose() }
    }
}

/// Waits for POSIX signals without a signal handler racing the program (Dispatch sources).
/// `sources` is written only in init, so sharing the waiter is safe.
final class SignalWaiter: @unchecked Sendable {
    private let sources: [any DispatchSourceSignal]
    private let state = Mutex<(received: Int32?, waiter: CheckedContinuation<Int32, Never>?)>((nil, nil))

    init(_ signals: [Int32]) {
        sources = signals.map { signalNumber in
            signal(signalNumber, SIG_IGN)
            return DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        }
        for (source, signalNumber) in zip(sources, signals) {
            source.setEventHandler { [self] in received(signalNumber) }
            source.resume()
        }
    }

    private func received(_ signalNumber: Int32) {
        let waiter = state.withLock { state -> CheckedContinuation<Int32, Never>? in
            if state.received == nil { state.received = signalNumber }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: signalNumber)
    }

    func next() async -> Int32 {
        await withCheckedContinuation { continuation in
            let received = state.withLock { state -> Int32? in
                if let received = state.received { return received }
                state.waiter = continuation
                return nil
            }
            if let received { continuation.resume(returning: received) }
        }
    }
}

extension EventLoopGroup {
    /// One loop per core.
    public static var defaultLoopCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}

/// Runs blocking work on a plain thread.
enum Thread {
    static func detach(_ work: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(WorkBox(work)).toOpaque()
        var handle = pthread_t()
        pthread_create(&handle, nil, { context in
            Unmanaged<WorkBox>.fromOpaque(context!).takeRetainedValue().work()
            return nil
        }, box)
        pthread_detach(handle)
    }

    private final class WorkBox: Sendable {
        let work: @Sendable () -> Void
        init(_ work: @escaping @Sendable () -> Void) { self.work = work }
    }
}
