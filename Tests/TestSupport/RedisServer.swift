// A real redis-server for tests, one per fixture, on a free port of 127.0.0.1.
//
// Design: the port is found by binding port 0 and closing the socket, which leaves a window for
// another process to grab it, so `init` retries with a new port when the server exits at start.
// `stop()` and `start()` keep the port, so a test can take Redis away under a client and bring
// it back where the client expects it. Nothing is persisted (`--save "" --appendonly no`) and
// the working directory is a temporary one, removed in deinit. Readiness is "answers PING"
// (with a password, the NOAUTH error counts as an answer). The child is a ChildProcess.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A redis-server child process for tests.
public final class RedisServer: @unchecked Sendable {
    public enum Failure: Error, CustomStringConvertible {
        case notFound
        case didNotStart(String)
        public var description: String {
            switch self {
            case .notFound: "redis-server not found (apt-get install redis-server)"
            case .didNotStart(let detail): "redis-server did not start: \(detail)"
            }
        }
    }

    public let port: Int
    public let password: String?
    public let directory: URL
    private let lock = NSLock()
    private var pid: pid_t?

    /// Starts a server on a free port; `password` sets `requirepass`.
    public init(password: String? = nil) throws {
        self.password = password
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var lastError: Error = Failure.didNotStart("no free port")
        for _ in 0..<5 {
            let candidate = try Self.freePort()
            do {
                pid = try Self.launch(port: candidate, password: password, directory: directory)
                port = candidate
                return
            } catch {
                lastError = error
            }
        }
        try? FileManager.default.removeItem(at: directory)
        throw lastError
    }

    /// `init`, off Swift's cooperative pool: a start waits for the server to answer, and a pool
    /// thread held that long stalls every other test of the process (the pool has a thread per
    /// core, two here).
    public static func started(password: String? = nil) async throws -> RedisServer {
        try await ChildProcess.offload { try RedisServer(password: password) }
    }

    /// `start()` again after a stop, off the pool.
    public func relaunch() async throws {
        try await ChildProcess.offload { try self.start() }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// "127.0.0.1".
    public var host: String { "127.0.0.1" }

    public var isRunning: Bool { lock.withLock { pid != nil } }

    /// Terminates the server (SIGTERM) and waits for it to exit. No-op when stopped.
    public func stop() { end(with: SIGTERM) }

    /// Kills the server (SIGKILL), as a crash would, and waits for it to exit.
    public func kill() { end(with: SIGKILL) }

    private func end(with signal: Int32) {
        let running = lock.withLock { () -> pid_t? in
            defer { pid = nil }
            return pid
        }
        guard let running else { return }
        Glibc.kill(running, signal)
        ChildProcess.reap(running)
    }

    /// Starts the server again on the same port (after `stop()`); waits until it answers.
    public func start() throws {
        guard !isRunning else { return }
        var lastError: Error = Failure.didNotStart("port \(port) busy")
        for _ in 0..<20 {
            do {
                let started = try Self.launch(port: port, password: password, directory: directory)
                lock.withLock { pid = started }
                return
            } catch {
                lastError = error
                usleep(100_000)
            }
        }
        throw lastError
    }

    // MARK: - Process and port

    private static func launch(port: Int, password: String?, directory: URL) throws -> pid_t {
        try spawnAndWait(arguments(port: port, password: password, directory: directory), port: port)
    }

    /// The command line of a test redis-server on `port` in `directory` (nothing persisted);
    /// the multi-node fixtures append their cluster or replication options to it.
    static func arguments(port: Int, password: String?, directory: URL) throws -> [String] {
        var arguments = [try executable(), "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                         "--dir", directory.path, "--daemonize", "no", "--logfile", "redis-\(port).log"]
        if let password { arguments += ["--requirepass", password, "--masterauth", password] }
        return arguments
    }

    /// The redis-server binary (which is also redis-sentinel, with `--sentinel`).
    static func executable() throws -> String {
        guard let executable = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first(where: {
            FileManager.default.isExecutableFile(atPath: $0)
        }) else { throw Failure.notFound }
        return executable
    }

    /// Spawns a Redis process that will listen on `port` and waits until it answers PING.
    static func spawnAndWait(_ arguments: [String], port: Int) throws -> pid_t {
        let pid = try ChildProcess.spawn(arguments).pid
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                throw Failure.didNotStart("exited with status \(status) on port \(port)")
            }
            if answersPing(port: port) {
                // Ours, or another test's server that picked the same free port a moment
                // before (ours then fails to bind and exits): two tests must not share one.
                let password = arguments.firstIndex(of: "--requirepass").map { arguments[$0 + 1] }
                if answeringProcess(port: port, password: password) == pid { return pid }
                Glibc.kill(pid, SIGKILL)
                ChildProcess.reap(pid)
                throw Failure.didNotStart("port \(port) is served by another redis-server")
            }
            usleep(20_000)
        }
        Glibc.kill(pid, SIGKILL)
        ChildProcess.reap(pid)
        throw Failure.didNotStart("no answer to PING on port \(port) within 10 s")
    }

    /// A socket connected to `port` of 127.0.0.1 whose sends and receives block at most
    /// `timeout` microseconds; nil if it cannot connect. Close it when done.
    private static func connectedSocket(port: Int, timeout microseconds: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var timeout = timeval(tv_sec: microseconds / 1_000_000, tv_usec: microseconds % 1_000_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Connects, sends PING and reads one reply line, with short blocking timeouts.
    private static func answersPing(port: Int) -> Bool {
        guard let fd = connectedSocket(port: port, timeout: 500_000) else { return false }
        defer { close(fd) }
        let ping = Array("*1\r\n$4\r\nPING\r\n".utf8)
        guard send(fd, ping, ping.count, Int32(MSG_NOSIGNAL)) == ping.count else { return false }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count > 0 && (buffer[0] == UInt8(ascii: "+") || buffer[0] == UInt8(ascii: "-"))
    }

    /// The `process_id` INFO reports on `port` (after AUTH when `password` is set); nil if it
    /// cannot be read.
    private static func answeringProcess(port: Int, password: String?) -> pid_t? {
        guard let fd = connectedSocket(port: port, timeout: 2_000_000) else { return nil }
        defer { close(fd) }
        func command(_ parts: [String]) -> String {
            "*\(parts.count)\r\n" + parts.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
        }
        let request = Array(((password.map { command(["AUTH", $0]) } ?? "") + command(["INFO", "server"])).utf8)
        guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return nil }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while received.count < 65_536 {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { return nil }
            received += buffer[0..<count]
            // The line counts once its end has arrived.
            let text = String(decoding: received, as: UTF8.self)
            if let start = text.range(of: "\r\nprocess_id:")?.upperBound, let end = text[start...].range(of: "\r\n") {
                return pid_t(text[start..<end.lowerBound])
            }
        }
        return nil
    }

    /// A port nobody listens on right now (bind port 0, read it, close).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure.didNotStart("socket: errno \(errno)") }
        defer { close(fd) }
        guard bind(fd, port: 0) else { throw Failure.didNotStart("bind: errno \(errno)") }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Binds `port` of 127.0.0.1 without listening, so that until the returned descriptor is
    /// closed no other test can take the port and connecting to it is refused; nil if it is
    /// taken already.
    public static func holdPort(_ port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        guard bind(fd, port: port) else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Whether `port` of 127.0.0.1 can be bound right now.
    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return bind(fd, port: port)
    }

    private static func bind(_ fd: Int32, port: Int) -> Bool {
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }
}
