// Finding the master of a Sentinel-watched group, as Sentinel's client guidelines describe it.
// Loop-confined, shared by every connection of a client.
//
// Design: every connect attempt of a connection to the master asks for the address anew
// (`SENTINEL get-master-addr-by-name`), trying the sentinels in order, and the sentinel that
// answered moves to the front for next time. The connection then checks with ROLE that the
// server is a master, and drops itself on READONLY or LOADING (see `ConnectionManager`), so after
// a failover every connection, subscriptions and blocking ones included, ends up on the new
// master. Until the sentinels have promoted a replica they still name the dead master, whose
// connect is refused: commands fail fast with `.unavailable` and the backoff paces the asking.
// Sentinels get no AUTH or SELECT: those settings are the data nodes'.
import EventLoop

final class SentinelResolver {
    private var sentinels: [(endpoint: RedisEndpoint, connection: ConnectionManager)]
    private let masterName: String
    private let label: String

    init(sentinels: [RedisEndpoint], masterName: String, configuration: RedisConfiguration, loop: EventLoop) {
        var plain = configuration
        (plain.password, plain.database) = (nil, 0)
        self.sentinels = sentinels.map { ($0, ConnectionManager(configuration: plain.node($0), loop: loop)) }
        self.masterName = masterName
        label = configuration.endpoint
    }

    /// Reports the master's address, or `.unavailable` when no sentinel names one.
    func findMaster(_ report: @escaping (Result<RedisEndpoint, RedisError>) -> Void) {
        ask(sentinels[...], failures: [], report)
    }

    func close() {
        for sentinel in sentinels { sentinel.connection.close() }
    }

    private func ask(_ remaining: ArraySlice<(endpoint: RedisEndpoint, connection: ConnectionManager)>, failures: [String],
                     _ report: @escaping (Result<RedisEndpoint, RedisError>) -> Void) {
        guard let sentinel = remaining.first else {
            let detail = "no sentinel named the master: " + failures.joined(separator: "; ")
            return report(.failure(RedisError(.unavailable, endpoint: label, detail: detail)))
        }
        let question = ["SENTINEL", "get-master-addr-by-name", masterName].map { Array($0.utf8) }
        sentinel.connection.send(question, PendingCommand(.handler { [self] result, _ in
            if case .success(.array(let address)) = result, address.count == 2,
               let host = address[0].string, let port = address[1].int {
                if let index = sentinels.firstIndex(where: { $0.endpoint == sentinel.endpoint }) {
                    sentinels.insert(sentinels.remove(at: index), at: 0)
                }
                return report(.success(RedisEndpoint(host: host, port: Int(port))))
            }
            let failure = switch result {
            case .success(.null): "\(sentinel.endpoint) does not know \(masterName)"
            case .success(let reply): "\(sentinel.endpoint) answered \(reply)"
            case .failure(let error): error.description
            }
            ask(remaining.dropFirst(), failures: failures + [failure], report)
        }))
    }
}
