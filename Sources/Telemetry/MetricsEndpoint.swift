// The plain-HTTP port that Prometheus scrapes: `GET /metrics` answers the text exposition
// format (version 0.0.4); any other path is 404, any other method 405. HTTP/1.1, one request per
// connection (`Connection: close`), which is how Prometheus scrapes and keeps this server small.
//
// It runs on an event loop of its own, so a scrape never takes a gRPC loop's time beyond the
// moment its recorders are read. Bounds against a client that misbehaves: the request head
// must fit in 8 KiB, at most 64 connections are open at once (more are closed as accepted), and
// a connection that has not been answered and written within 10 s is closed. While the answer is
// being made the socket is not watched at all (the loop is level-triggered: a peer that closed
// early would otherwise wake it without end); out of descriptors, accepting pauses 100 ms.
import EventLoop
#if canImport(Glibc)
import Glibc
#endif

/// Serves `/metrics` for a `ServiceMetrics` on `host:port`.
public final class MetricsEndpoint: Sendable {
    private let loop: EventLoop
    private let listener: LoopBound<MetricsListener>
    /// The port listened on (the one asked for, or the one picked for port 0).
    public let port: Int

    /// Binds at once; throws when the address cannot be bound.
    public init(host: String, port: Int, metrics: ServiceMetrics) throws(SocketError) {
        ignoreSIGPIPE()
        let (fd, bound) = try Socket.listen(host: host, port: port, backlog: 64)
        self.port = bound
        loop = EventLoop(name: "metrics")
        let listener = LoopBound(MetricsListener(fd: fd, loop: loop, metrics: metrics), loop: loop)
        self.listener = listener
        loop.execute { listener.value.start() }
    }

    /// Stops listening, closes open connections and stops the loop.
    public func close() {
        let listener = self.listener
        loop.execute { listener.value.close() }
        loop.shutdownGracefully()
    }
}

/// Accepts scrape connections; on its loop only.
final class MetricsListener: IOHandler {
    static let maxConnections = 64
    let fd: Int32
    let loop: EventLoop
    let metrics: ServiceMetrics
    private var connections: [Int32: MetricsConnection] = [:]
    private var closed = false

    init(fd: Int32, loop: EventLoop, metrics: ServiceMetrics) {
        self.fd = fd
        self.loop = loop
        self.metrics = metrics
    }

    func start() {
        guard !closed else { return }
        loop.register(fd, for: .read, handler: self)
    }

    func handleIO(_ events: IOEvents) {
        while true {
            switch Socket.accept(fd) {
            case .connection(let client):
                guard connections.count < Self.maxConnections else {
                    Socket.close(client)
                    continue
                }
                let connection = MetricsConnection(fd: client, listener: self)
                connections[client] = connection
                connection.start()
            case .outOfDescriptors:
                loop.deregister(fd)
                loop.schedule(after: .milliseconds(100)) { [weak self] in self?.start() }
                return
            case .none:
                return
            }
        }
    }

    func forget(_ client: Int32) { connections[client] = nil }

    func close() {
        closed = true
        loop.deregister(fd)
        Socket.close(fd)
        for connection in connections.values { connection.close() }
    }
}

/// One scrape: read the request head, answer, close.
final class MetricsConnection: IOHandler {
    static let maxHead = 8192
    let fd: Int32
    private unowned let listener: MetricsListener
    private var head: [UInt8] = []
    private var response: [UInt8] = []
    private var written = 0
    private var answering = false
    private var closed = false
    /// Whether the loop watches the socket (not while the answer is being made).
    private var watched = false
    private var timer: TimerID?

    init(fd: Int32, listener: MetricsListener) {
        self.fd = fd
        self.listener = listener
    }

    func start() {
        listener.loop.register(fd, for: .read, handler: self)
        watched = true
        timer = listener.loop.schedule(after: .seconds(10)) { [weak self] in self?.close() }
    }

    func handleIO(_ events: IOEvents) {
        if events.contains(.write) { flush() }
        guard !answering, !closed else { return }
        while !answering, !closed {
            switch Socket.read(fd, appendingTo: &head) {
            case .transferred:
                requestReadIfComplete()
            case .wouldBlock:
                return
            case .closed, .failed:
                return close()
            }
        }
    }

    private func requestReadIfComplete() {
        guard let end = head.firstRange(of: [13, 10, 13, 10]) else {
            if head.count > Self.maxHead { answer(status: "431 Request Header Fields Too Large", body: Array("request head too large\n".utf8)) }
            return
        }
        answering = true
        let requestLine = head[..<(head.firstRange(of: [13, 10])?.lowerBound ?? end.lowerBound)].split(separator: UInt8(ascii: " "))
        let method = requestLine.first.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let target = requestLine.count > 1 ? String(decoding: requestLine[1], as: UTF8.self) : ""
        let path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard method == "GET" || method == "HEAD" else {
            return answer(status: "405 Method Not Allowed", body: Array("only GET\n".utf8), extra: "Allow: GET, HEAD\r\n")
        }
        guard path == "/metrics" else { return answer(status: "404 Not Found", body: Array("metrics are at /metrics\n".utf8)) }
        let metrics = listener.metrics
        let this = LoopBound(self, loop: listener.loop)
        let headOnly = method == "HEAD"
        listener.loop.deregister(fd)
        watched = false
        Task {
            let exposition = await metrics.exposition()
            this.loop.execute {
                this.value.answer(status: "200 OK", body: exposition, headOnly: headOnly,
                                  extra: "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n")
            }
        }
    }

    private func answer(status: String, body: [UInt8], headOnly: Bool = false, extra: String = "") {
        guard !closed else { return }
        answering = true
        let head = "HTTP/1.1 \(status)\r\n\(extra)Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        response = Array(head.utf8) + (headOnly ? [] : body)
        flush()
    }

    private func flush() {
        while written < response.count, !closed {
            switch Socket.write(fd, response, from: written) {
            case .transferred(let count):
                written += count
            case .wouldBlock:
                if watched {
                    listener.loop.modify(fd, for: .write)
                } else {
                    listener.loop.register(fd, for: .write, handler: self)
                    watched = true
                }
                return
            case .closed, .failed:
                return close()
            }
        }
        if answering, written == response.count, !response.isEmpty { close() }
    }

    func close() {
        guard !closed else { return }
        closed = true
        if let timer { listener.loop.cancel(timer) }
        if watched { listener.loop.deregister(fd) }
        Socket.close(fd)
        listener.forget(fd)
    }
}
