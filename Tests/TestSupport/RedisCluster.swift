// A real Redis Cluster for tests: N masters with R replicas each, every node a redis-server
// child process on 127.0.0.1.
//
// Design: the nodes start with `--cluster-enabled yes` on ports at or below 55535 (their bus is
// on port + 10000), `redis-cli --cluster create` assigns slots and replicas, and `init` returns
// once every node reports `cluster_state:ok`. The topology questions (who is master of a key,
// which replicas a master has) are asked of a live node with CLUSTER NODES, so they stay right
// after a failover. `kill(_:)` is a SIGKILL, as a crash; `waitForFailover(of:)` waits until a
// replica serves the dead master's slots on every live node. A short node timeout (default 2 s)
// keeps failovers to a few seconds. Everything goes with the fixture (processes and files).
// Starting and the waits are async and run on a thread of their own (`ChildProcess.offload`):
// they block for seconds, which tests must not do on Swift concurrency's few threads.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A Redis Cluster of child processes for tests.
public final class RedisCluster: @unchecked Sendable {
    /// One line of CLUSTER NODES, as seen by some live node.
    public struct Node: Sendable, Equatable {
        public let id: String
        public let port: Int
        public let isMaster: Bool
        public let isFailed: Bool
        /// The id of the master this node replicates (nil for a master).
        public let masterID: String?
        /// The slot ranges it serves (masters only).
        public let slots: [ClosedRange<Int>]
    }

    private let group: RedisProcessGroup
    private let lock = NSLock()
    /// The first slot each killed master served, to recognise its successor.
    private var killedSlots: [Int: Int] = [:]

    /// Starts `masters` (at least 3) masters with `replicasPerMaster` replicas each and returns
    /// once the cluster is ok and the replicas have synced (up to `timeout`).
    public static func start(masters: Int = 3, replicasPerMaster: Int = 1, password: String? = nil,
                             nodeTimeoutMilliseconds: Int = 2000, timeout: Duration = .seconds(60)) async throws -> RedisCluster {
        try await ChildProcess.offload {
            try RedisCluster(masters: masters, replicasPerMaster: replicasPerMaster, password: password,
                             nodeTimeoutMilliseconds: nodeTimeoutMilliseconds, timeout: timeout)
        }
    }

    private init(masters: Int, replicasPerMaster: Int, password: String?, nodeTimeoutMilliseconds: Int, timeout: Duration) throws {
        group = try RedisProcessGroup(password: password)
        let directory = group.directory.path
        for _ in 0..<(masters * (1 + replicasPerMaster)) {
            _ = try group.startServer { port in
                ["--cluster-enabled", "yes", "--cluster-config-file", "\(directory)/nodes-\(port).conf",
                 "--cluster-node-timeout", String(nodeTimeoutMilliseconds)]
            }
        }
        let create = group.cliCommand(ports[0]) + ["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" }
            + ["--cluster-replicas", String(replicasPerMaster), "--cluster-yes"]
        _ = try ChildProcess.output(of: create, timeoutSeconds: 120)
        try waitUntilHealthySynchronously(timeout: timeout)
        // Replicas must have synced before a test kills a master and expects a promotion (a
        // replica that never synced is not eligible) or waits for an acknowledgement.
        try RedisProcessGroup.waitUntil("replicas in sync", timeout: timeout) {
            let synced = ports.filter { port in
                let replication = group.cli(port, "INFO", "replication")
                return replication.contains("role:slave") && replication.contains("master_link_status:up")
            }
            return synced.count == masters * replicasPerMaster
        }
    }

    /// "127.0.0.1".
    public var host: String { "127.0.0.1" }

    /// The ports of the nodes still running, masters and replicas.
    public var ports: [Int] { group.ports }

    /// "127.0.0.1:p1,127.0.0.1:p2,...": every running node, as a client's seed list.
    public var seedList: String { ports.map { "127.0.0.1:\($0)" }.joined(separator: ",") }

    /// Runs redis-cli against the node on `port`, e.g. `cli(port, "CLUSTER", "INFO")`.
    public func cli(_ port: Int, _ arguments: [String]) -> String {
        (try? ChildProcess.output(of: group.cliCommand(port) + arguments)) ?? ""
    }

    /// The cluster as a live node sees it now.
    public func nodes() throws -> [Node] {
        for port in ports {
            let lines = cli(port, ["CLUSTER", "NODES"]).split(separator: "\n")
            let nodes = lines.compactMap(Self.parseNode)
            if !nodes.isEmpty { return nodes }
        }
        throw RedisServer.Failure.didNotStart("no node answers CLUSTER NODES")
    }

    /// The ports of the masters serving slots now.
    public func masterPorts() throws -> [Int] {
        try nodes().filter { $0.isMaster && !$0.isFailed && !$0.slots.isEmpty }.map(\.port).sorted()
    }

    /// The hash slot of `key` (asked of the cluster: CLUSTER KEYSLOT).
    public func slot(of key: String) throws -> Int {
        for port in ports {
            if let slot = Int(cli(port, ["CLUSTER", "KEYSLOT", key]).trimmingCharacters(in: .whitespacesAndNewlines)) { return slot }
        }
        throw RedisServer.Failure.didNotStart("no node answers CLUSTER KEYSLOT")
    }

    /// The port of the master serving `key` now.
    public func masterPort(forKey key: String) throws -> Int {
        let slot = try slot(of: key)
        guard let master = try nodes().first(where: { $0.isMaster && !$0.isFailed && $0.slots.contains { $0.contains(slot) } }) else {
            throw RedisServer.Failure.didNotStart("no master serves slot \(slot)")
        }
        return master.port
    }

    /// The ports of the replicas of the master on `port`.
    public func replicaPorts(ofMaster port: Int) throws -> [Int] {
        let nodes = try nodes()
        guard let master = nodes.first(where: { $0.port == port }) else { return [] }
        return nodes.filter { $0.masterID == master.id && !$0.isFailed }.map(\.port)
    }

    /// SIGKILLs the node on `port`, as a crash would.
    public func kill(_ port: Int) {
        let slots = (try? nodes().first { $0.port == port }?.slots) ?? nil
        lock.withLock { killedSlots[port] = slots?.first?.lowerBound }
        group.stop(port, signal: SIGKILL)
    }

    /// Waits until every running node reports `cluster_state:ok`.
    public func waitUntilHealthy(timeout: Duration = .seconds(60)) async throws {
        try await ChildProcess.offload { try self.waitUntilHealthySynchronously(timeout: timeout) }
    }

    private func waitUntilHealthySynchronously(timeout: Duration) throws {
        try RedisProcessGroup.waitUntil("cluster_state:ok on every node", timeout: timeout) {
            ports.allSatisfy { cli($0, ["CLUSTER", "INFO"]).contains("cluster_state:ok") }
        }
    }

    /// After `kill(port)` of a master: waits until every running node sees another node (the
    /// promoted replica) serving its slots and reports `cluster_state:ok`. Returns that node's port.
    @discardableResult
    public func waitForFailover(of port: Int, timeout: Duration = .seconds(60)) async throws -> Int {
        try await ChildProcess.offload { try self.waitForFailoverSynchronously(of: port, timeout: timeout) }
    }

    private func waitForFailoverSynchronously(of port: Int, timeout: Duration) throws -> Int {
        guard let slot = lock.withLock({ killedSlots[port] }) else {
            throw RedisServer.Failure.didNotStart("\(port) was not a master killed with kill(_:)")
        }
        var promoted = 0
        try RedisProcessGroup.waitUntil("failover of \(port)", timeout: timeout) {
            let owners = ports.map { live in
                cli(live, ["CLUSTER", "NODES"]).split(separator: "\n").compactMap(Self.parseNode)
                    .first { $0.isMaster && !$0.isFailed && $0.slots.contains { $0.contains(slot) } }?.port
            }
            guard let owner = owners.first ?? nil, owner != port, owners.allSatisfy({ $0 == owner }),
                  ports.allSatisfy({ cli($0, ["CLUSTER", "INFO"]).contains("cluster_state:ok") }) else { return false }
            promoted = owner
            return true
        }
        return promoted
    }

    /// "id 127.0.0.1:port@bus flags master ping pong epoch link slots..."
    private static func parseNode(_ line: Substring) -> Node? {
        let fields = line.split(separator: " ")
        guard fields.count >= 8, let address = fields[1].split(separator: "@").first,
              let port = address.split(separator: ":").last.flatMap({ Int($0) }) else { return nil }
        let flags = fields[2].split(separator: ",")
        let slots = fields.dropFirst(8).compactMap { field -> ClosedRange<Int>? in
            let bounds = field.split(separator: "-").compactMap { Int($0) }  // "[...]" migration entries do not parse
            switch bounds.count {
            case 1: return bounds[0]...bounds[0]
            case 2 where bounds[0] <= bounds[1]: return bounds[0]...bounds[1]
            default: return nil
            }
        }
        return Node(id: String(fields[0]), port: port, isMaster: flags.contains("master"), isFailed: flags.contains("fail"),
                    masterID: fields[3] == "-" ? nil : String(fields[3]), slots: slots)
    }
}
