// A master watched by Redis Sentinel, for tests: one master, R replicas and (by default) three
// sentinels, all child processes on 127.0.0.1.
//
// Design: the data nodes are test redis-servers (replicas with `--replicaof`); each sentinel is
// redis-server in sentinel mode with a config file of its own (Sentinel rewrites it), quorum 2,
// a short down-after (1 s) and failover timeout, so a failover takes a few seconds. `init`
// returns once the replicas are in sync and every sentinel knows the replicas and the other
// sentinels, which a failover needs. `killMaster()` is a SIGKILL; `waitForNewMaster` waits
// until the sentinels name another master and that server says it is one. Starting and waiting
// run on a thread of their own (`ChildProcess.offload`), as the cluster fixture's do.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A Sentinel-watched master with replicas, as child processes for tests.
public final class RedisSentinelGroup: @unchecked Sendable {
    public let masterName: String
    /// The ports of the sentinels.
    public let sentinelPorts: [Int]
    /// The ports of the master and replicas as started (the master first).
    public let dataPorts: [Int]
    private let group: RedisProcessGroup

    /// Starts the master, `replicas` replicas and `sentinels` sentinels (quorum 2) and returns
    /// once the replicas have synced and the sentinels know them and each other.
    public static func start(replicas: Int = 1, sentinels: Int = 3, masterName: String = "platform", password: String? = nil,
                             downAfterMilliseconds: Int = 1000, failoverTimeoutMilliseconds: Int = 3000,
                             timeout: Duration = .seconds(60)) async throws -> RedisSentinelGroup {
        try await ChildProcess.offload {
            try RedisSentinelGroup(replicas: replicas, sentinels: sentinels, masterName: masterName, password: password,
                                   downAfterMilliseconds: downAfterMilliseconds,
                                   failoverTimeoutMilliseconds: failoverTimeoutMilliseconds, timeout: timeout)
        }
    }

    private init(replicas: Int, sentinels: Int, masterName: String, password: String?,
                 downAfterMilliseconds: Int, failoverTimeoutMilliseconds: Int, timeout: Duration) throws {
        self.masterName = masterName
        group = try RedisProcessGroup(password: password)
        let master = try group.startServer()
        var data = [master]
        for _ in 0..<replicas {
            data.append(try group.startServer { _ in ["--replicaof", "127.0.0.1", String(master)] })
        }
        dataPorts = data
        let directory = group.directory
        var ports: [Int] = []
        for _ in 0..<sentinels {
            ports.append(try group.start { port in
                var lines = ["port \(port)", "bind 127.0.0.1", "daemonize no", "dir \(directory.path)",
                             "logfile sentinel-\(port).log",
                             "sentinel monitor \(masterName) 127.0.0.1 \(master) 2",
                             "sentinel down-after-milliseconds \(masterName) \(downAfterMilliseconds)",
                             "sentinel failover-timeout \(masterName) \(failoverTimeoutMilliseconds)",
                             "sentinel parallel-syncs \(masterName) 1"]
                if let password { lines.append("sentinel auth-pass \(masterName) \(password)") }
                let file = directory.appendingPathComponent("sentinel-\(port).conf")
                try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
                return [try RedisServer.executable(), file.path, "--sentinel"]
            })
        }
        sentinelPorts = ports
        try RedisProcessGroup.waitUntil("replicas in sync", timeout: timeout) {
            data.dropFirst().allSatisfy { group.cli($0, "INFO", "replication").contains("master_link_status:up") }
        }
        try RedisProcessGroup.waitUntil("sentinels know each other and the replicas", timeout: timeout) {
            ports.allSatisfy { port in
                let fields = sentinelFields(port, "SENTINEL", "MASTER", masterName)
                return fields["num-other-sentinels"] == String(sentinels - 1) && fields["num-slaves"] == String(replicas)
            }
        }
    }

    /// "127.0.0.1:p1,127.0.0.1:p2,...": the sentinels, as a client's list.
    public var sentinelList: String { sentinelPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    /// The master's port as the first sentinel that answers names it.
    public func masterPort() throws -> Int {
        for port in sentinelPorts where group.isRunning(port) {
            let lines = group.cli(port, "SENTINEL", "get-master-addr-by-name", masterName).split(separator: "\n")
            if lines.count == 2, let master = Int(lines[1]) { return master }
        }
        throw RedisServer.Failure.didNotStart("no sentinel names master \(masterName)")
    }

    /// SIGKILLs the current master, as a crash would; returns its port.
    @discardableResult
    public func killMaster() throws -> Int {
        let master = try masterPort()
        group.stop(master, signal: SIGKILL)
        return master
    }

    /// Waits until the sentinels name a master other than `old` and it reports `role:master`.
    @discardableResult
    public func waitForNewMaster(replacing old: Int, timeout: Duration = .seconds(60)) async throws -> Int {
        try await ChildProcess.offload { try self.waitForNewMasterSynchronously(replacing: old, timeout: timeout) }
    }

    private func waitForNewMasterSynchronously(replacing old: Int, timeout: Duration) throws -> Int {
        var found = 0
        try RedisProcessGroup.waitUntil("a new master instead of \(old)", timeout: timeout) {
            guard let master = try? masterPort(), master != old,
                  group.cli(master, "INFO", "replication").contains("role:master") else { return false }
            found = master
            return true
        }
        return found
    }

    /// Runs redis-cli against the server or sentinel on `port`.
    public func cli(_ port: Int, _ arguments: [String]) -> String {
        (try? ChildProcess.output(of: group.cliCommand(port) + arguments)) ?? ""
    }

    /// A reply of name/value lines (SENTINEL MASTER) as a dictionary.
    private func sentinelFields(_ port: Int, _ arguments: String...) -> [String: String] {
        let lines = cli(port, arguments).split(separator: "\n").map(String.init)
        var fields: [String: String] = [:]
        for index in stride(from: 0, to: lines.count - 1, by: 2) { fields[lines[index]] = lines[index + 1] }
        return fields
    }
}
