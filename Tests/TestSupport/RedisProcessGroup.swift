// The processes of a multi-node Redis fixture (cluster nodes, a replicated group, sentinels),
// kept by port so a test can kill one and ask the others about it. Internal to TestSupport.
//
// Design: one temporary directory for the whole group (each node's files carry its port),
// removed when the group goes; every process is SIGKILLed then, so a failed test leaves nothing
// running. Ports come from `freePort`, which keeps to ports at or below 55535 whose +10000
// partner is free too: a cluster node's bus listens there, and Redis refuses higher ports.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

final class RedisProcessGroup: @unchecked Sendable {
    let directory: URL
    let password: String?
    private let lock = NSLock()
    private var pids: [Int: pid_t] = [:]

    init(password: String?) throws {
        self.password = password
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-group-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    deinit {
        for pid in lock.withLock({ Array(pids.values) }) { ChildProcess.stop(pid, signal: SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts a process on a fresh port; `arguments(port)` gives its full command line. Retries
    /// on another port when the chosen one was taken meanwhile. Returns the port.
    func start(_ arguments: (Int) throws -> [String]) throws -> Int {
        var lastError: Error = RedisServer.Failure.didNotStart("no free port")
        for _ in 0..<5 {
            let port = try Self.freePort()
            do {
                let pid = try RedisServer.spawnAndWait(try arguments(port), port: port)
                lock.withLock { pids[port] = pid }
                return port
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// A redis-server on a fresh port with the standard test options plus `extra(port)`.
    func startServer(_ extra: (Int) -> [String] = { _ in [] }) throws -> Int {
        try start { port in try RedisServer.arguments(port: port, password: password, directory: directory) + extra(port) }
    }

    var ports: [Int] { lock.withLock { pids.keys.sorted() } }

    func isRunning(_ port: Int) -> Bool { lock.withLock { pids[port] != nil } }

    /// Ends the process on `port` with `signal` (SIGKILL: as a crash would) and reaps it.
    func stop(_ port: Int, signal: Int32 = SIGKILL) {
        guard let pid = lock.withLock({ pids.removeValue(forKey: port) }) else { return }
        ChildProcess.stop(pid, signal: signal)
    }

    /// Runs redis-cli against `port` and returns its output, e.g. `cli(port, "CLUSTER", "INFO")`.
    func cli(_ port: Int, _ arguments: String...) -> String {
        (try? ChildProcess.output(of: cliCommand(port) + arguments)) ?? ""
    }

    func cliCommand(_ port: Int) -> [String] {
        ["/usr/bin/redis-cli", "-h", "127.0.0.1", "-p", String(port)] + (password.map { ["-a", $0, "--no-auth-warning"] } ?? [])
    }

    /// Polls `condition` every 100 ms until it holds or `timeout` passes.
    static func waitUntil(_ what: String, timeout: Duration, _ condition: () throws -> Bool) throws {
        let deadline = ContinuousClock.now + timeout
        while try !condition() {
            guard ContinuousClock.now < deadline else { throw RedisServer.Failure.didNotStart("\(what) not within \(timeout)") }
            usleep(100_000)
        }
    }

    /// A free port at or below 55535 whose +10000 partner is free too.
    static func freePort() throws -> Int {
        for _ in 0..<200 {
            let port = Int.random(in: 20000...55535)
            if RedisServer.isFree(port), RedisServer.isFree(port + 10000) { return port }
        }
        throw RedisServer.Failure.didNotStart("no free port pair")
    }
}
