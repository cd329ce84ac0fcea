// The gRPC server: listens on one address, serves a set of services on a group of event loops.
//
// The listening socket is registered with every loop; whichever loop wins `accept` owns the new
// connection for its whole life (no locks on the request path). Handlers run as Tasks on Swift's
// cooperative pool, so a slow handler (awaiting Redis) never holds a loop thread.
// Shutdown: stop accepting, GOAWAY every connection, let the RPCs in flight finish within the
// grace period, then close what is left. The server serves exactly the services it is given: the
// health and reflection services are ordinary ones (module GRPCServices), so the caller flips
// health to NOT_SERVING (`runUntilTerminated`'s `beforeShutdown`) before the drain begins.
//
// Admission, against floods of sockets that never speak (ServerConnection.swift has the
// per-connection handshake bound, keepalive and ping policy): a peer address may hold at most
// `maxConnectionsPerPeer` connections; at `maxConnections`, the new connection takes the place of
// one on the accepting loop that has not finished its handshake (the oldest), else of the one
// idle longest (no call open, least recent activity), and is refused only when all are busy.
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
    /// At this many connections, a new one replaces one that has not finished its handshake
    /// (oldest first), else the one idle longest; it is refused only when every one has calls open.
    public var maxConnections = 4096
    /// Connections one peer IP address may hold at once; more are closed as soon as accepted.
    /// 512 leaves room for clients behind one NAT and for connection pools, while a single
    /// address cannot take more than an eighth of `maxConnections`.
    public var maxConnectionsPerPeer = 512
    /// TLS (h2 by ALPN) on every connection; nil serves h2c (HTTP/2 over plaintext).
    public var tls: ServerTLSConfiguration?
    /// A connection must have finished its handshake (TLS, then the HTTP/2 client preface and its
    /// first SETTINGS) this long after it was accepted, or it is closed.
    public var handshakeTimeout: Duration = .seconds(10)
    /// After this long with nothing received, the server sends a PING (gRPC's default: 2 hours).
    public var keepaliveInterval: Duration = .seconds(7200)
    /// A PING unanswered for this long closes the connection (gRPC's default: 20 s).
    public var keepaliveTimeout: Duration = .seconds(20)
    /// A PING sooner than this after the previous one, while no call is open, is a strike
    /// (gRPC's `min_recv_ping_interval_without_data`, 5 minutes).
    public var minimumPingInterval: Duration = .seconds(300)
    /// Strikes allowed; one more is answered GOAWAY ENHANCE_YOUR_CALM "too_many_pings" (gRPC: 2).
    public var maxPingStrikes = 2
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
    /// Told about every call (metrics), through one recorder per loop.
    let observer: (any ServerCallObserver)?
    let connectionCount = Atomic<Int>(0)
    let shuttingDown: OnceFlag
    /// Open connections per peer address, across every loop.
    private let peers = Mutex<[PeerAddress: Int]>([:])

    init(configuration: ServerConfiguration, router: Router, shuttingDown: OnceFlag, logger: Logger,
         observer: (any ServerCallObserver)?) {
        self.configuration = configuration
        self.router = router
        self.shuttingDown = shuttingDown
        self.logger = logger
        self.observer = observer
    }

    /// Counts a new connection from `peer`; false when the peer is at its cap.
    func admit(_ peer: PeerAddress) -> Bool {
        let limit = configuration.maxConnectionsPerPeer
        return peers.withLock { counts in
            let count = counts[peer, default: 0]
            guard count < limit else { return false }
            counts[peer] = count + 1
            return true
        }
    }

    /// A connection from `peer` has closed.
    func release(_ peer: PeerAddress) {
        peers.withLock { counts in
            if let count = counts[peer], count > 1 { counts[peer] = count - 1 } else { counts[peer] = nil }
        }
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

/// A gRPC server over HTTP/2 (TLS with ALPN h2 when configured, else h2c with prior knowledge)
/// serving methods of all four kinds.
public final class GRPCServer: Sendable {
    private let core: ServerCore
    private let group: EventLoopGroup
    private let listeners = Mutex<[LoopBound<Listener>]>([])
    private let boundPort = Atomic<Int>(0)
    private let listenFD = Atomic<Int32>(-1)

    /// `interceptors` run before every handler (authorization, say), in order; `observer` is
    /// told about every call (metrics).
    public init(configuration: ServerConfiguration, services: [ServiceDefinition],
                interceptors: [any ServerInterceptor] = [], observer: (any ServerCallObserver)? = nil,
                logger: Logger = Logger(label: "grpc")) {
        core = ServerCore(configuration: configuration, router: Router(services, interceptors: interceptors),
                          shuttingDown: OnceFlag(), logger: logger, observer: observer)
        group = EventLoopGroup(loopCount: configuration.loopCount, name: "grpc")
    }

    /// The port actually listened on (useful with port 0).
    public var port: Int { boundPort.load(ordering: .relaxed) }

    /// Connections open now (accepted and not yet closed).
    public var connectionCount: Int { core.connectionCount.load(ordering: .relaxed) }

    /// Binds and starts serving. Throws when the address cannot be bound.
    public func start() throws(SocketError) {
        ignoreSIGPIPE()
        let (fd, port) = try Socket.listen(host: core.configuration.host, port: core.configuration.port)
        boundPort.store(port, ordering: .relaxed)
        listenFD.store(fd, ordering: .relaxed)
        let bound = group.loops.map { loop in LoopBound(Listener(loop: loop, fd: fd, core: core), loop: loop) }
        for listener in bound {
            let siblings = bound.filter { $0.loop !== listener.loop }
            listener.loop.execute {
                listener.value.siblings = siblings
                listener.value.all = bound
                listener.value.start()
            }
        }
        listeners.withLock { $0 = bound }
        core.logger.info("serving", metadata: ["address": "\(core.configuration.host):\(port)",
                                                "tls": "\(core.configuration.tls.map { $0.requiresClientCertificate ? "mtls" : "on" } ?? "off")",
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

/// Accepts connections on one loop and remembers them, for draining and eviction.
final class Listener: IOHandler {
    let loop: EventLoop
    let fd: Int32
    private let core: ServerCore
    /// By accept order (a serial number), so eviction can find the oldest.
    private var connections: [UInt64: ServerConnection] = [:]
    private var nextSerial: UInt64 = 0
    /// Serials in accept order of connections that may still be handshaking; entries of those
    /// that finished or closed are skipped when met, and pruned when they pile up.
    private var handshakeQueue: [UInt64] = []
    private var handshakeQueueHead = 0
    private var accepting = false
    /// This loop's I/O buffers, lent to each of its connections in turn.
    private let buffers = LoopBuffers()
    /// This loop's share of the observer, shared by its connections.
    private let recorder: (any ServerCallRecorder)?
    /// Refusals are logged at most once a second (a flood must not flood the log).
    private var lastRefusalLog: ContinuousClock.Instant?
    private var refusedSinceLog = 0
    /// The other loops' listeners, asked to make room when this loop has nothing to evict.
    var siblings: [LoopBound<Listener>] = []
    /// Every loop's listener, this one included: the connections this one accepts are handed to
    /// them in turn. Whichever loop wins `accept` (one usually wins them all, since both watch the
    /// same socket), every loop gets its share of connections and so of the work.
    var all: [LoopBound<Listener>] = []
    private var nextTarget = 0

    init(loop: EventLoop, fd: Int32, core: ServerCore) {
        self.loop = loop
        self.fd = fd
        self.core = core
        recorder = core.observer?.makeRecorder(methods: core.router.methods, loop: loop)
    }

    func start() {
        accepting = true
        loop.register(fd, for: .read, handler: self)
    }

    func handleIO(_ events: IOEvents) {
        while accepting {
            let client: Int32
            let (accepted, peer) = Socket.acceptWithPeer(fd)
            switch accepted {
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
            guard core.admit(peer) else {
                refused("connection limit per peer reached", peer, limit: core.configuration.maxConnectionsPerPeer)
                Socket.close(client)
                continue
            }
            // Count first, then check, so loops racing for the last slot cannot both take it. The
            // slot stays reserved while another loop is asked to make room.
            if core.connectionCount.add(1, ordering: .relaxed).newValue > core.configuration.maxConnections, !evictOne() {
                makeRoomElsewhere(client, peer, siblings[...])
                continue
            }
            handOut(client, peer)
        }
    }

    /// Serves the socket on the next loop in turn (this one, or another through `execute`).
    private func handOut(_ client: Int32, _ peer: PeerAddress) {
        guard all.count > 1 else { return admit(client, peer) }
        let target = all[nextTarget % all.count]
        nextTarget &+= 1
        if target.loop === loop {
            admit(client, peer)
        } else {
            target.loop.execute { target.value.admit(client, peer) }
        }
    }

    /// Serves an accepted socket whose slot is counted.
    func admit(_ client: Int32, _ peer: PeerAddress) {
        guard !core.shuttingDown.isSet else {
            // Shutdown began while another loop was making room.
            forget(client, peer)
            return
        }
        var session: TLSSession?
        if let tls = core.configuration.tls {
            session = tls.makeSession(fd: client)
            if session == nil {
                core.logger.error("cannot create a TLS session, closing new connection")
                forget(client, peer)
                return
            }
        }
        let connection = ServerConnection(loop: loop, fd: client, buffers: buffers, core: core, tls: session,
                                          peer: peer.description, recorder: recorder)
        nextSerial += 1
        let serial = nextSerial
        connections[serial] = connection
        handshakeQueue.append(serial)
        if handshakeQueue.count - handshakeQueueHead > 2 * connections.count + 64 { pruneHandshakeQueue() }
        connection.onClose = { [unowned self, core] in
            self.connections[serial] = nil
            core.connectionCount.subtract(1, ordering: .relaxed)
            core.release(peer)
        }
        connection.start()
    }

    /// Closes a socket that will not be served and gives its slot back.
    private func forget(_ client: Int32, _ peer: PeerAddress) {
        core.connectionCount.subtract(1, ordering: .relaxed)
        core.release(peer)
        Socket.close(client)
    }

    /// This loop had nothing to evict: asks the other loops in turn (each evicts on its own
    /// thread), admitting the socket once one made room, refusing it when none could.
    private func makeRoomElsewhere(_ client: Int32, _ peer: PeerAddress, _ candidates: ArraySlice<LoopBound<Listener>>) {
        guard let next = candidates.first else {
            refused("connection limit reached and every connection is busy", peer, limit: core.configuration.maxConnections)
            forget(client, peer)
            return
        }
        let this = LoopBound(self, loop: loop)
        let rest = candidates.dropFirst()
        next.loop.execute {
            let evicted = next.value.evictOne()
            this.loop.execute {
                if evicted {
                    this.value.admit(client, peer)
                } else {
                    this.value.makeRoomElsewhere(client, peer, rest)
                }
            }
        }
    }

    /// Closes one connection of this loop to make room: the oldest that has not finished its
    /// handshake, else the one idle longest. False when every connection has calls open.
    private func evictOne() -> Bool {
        while handshakeQueueHead < handshakeQueue.count {
            let serial = handshakeQueue[handshakeQueueHead]
            handshakeQueueHead += 1
            if let connection = connections[serial], !connection.handshakeComplete, !connection.isClosed {
                core.logger.debug("at the connection limit: closing the oldest connection still handshaking")
                connection.evict()
                return true
            }
        }
        handshakeQueue.removeAll(keepingCapacity: true)
        handshakeQueueHead = 0
        var victim: ServerConnection?
        for connection in connections.values where connection.isIdle && !connection.isClosed {
            if victim == nil || connection.lastActivityTime < victim!.lastActivityTime { victim = connection }
        }
        guard let victim else { return false }
        core.logger.debug("at the connection limit: closing the connection idle longest")
        victim.evict()
        return true
    }

    /// Drops queue entries of connections that finished their handshake or closed.
    private func pruneHandshakeQueue() {
        handshakeQueue = handshakeQueue[handshakeQueueHead...].filter { serial in
            connections[serial].map { !$0.handshakeComplete } ?? false
        }
        handshakeQueueHead = 0
    }

    private func refused(_ reason: String, _ peer: PeerAddress, limit: Int) {
        refusedSinceLog += 1
        let now = ContinuousClock.now
        if let last = lastRefusalLog, now - last < .seconds(1) { return }
        core.logger.warning("\(reason), closing new connection", metadata: [
            "peer": "\(peer)", "limit": "\(limit)", "refused": "\(refusedSinceLog)",
        ])
        lastRefusalLog = now
        refusedSinceLog = 0
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
