// Where Redis is and how patient to be with it. A plain value: every connection a client opens
// (commands, WATCH transactions, each subscription, each cluster node) is built from the same
// one, so a reconnect always repeats the same AUTH and SELECT, on every node of a deployment.

/// How to reach Redis (one server, a cluster or a Sentinel-watched master), and the timeouts,
/// reconnect pacing and replication waits to use with every node of it.
public struct RedisConfiguration: Sendable, Equatable {
    /// The server of a `.standalone` deployment; unused by the others.
    public var host: String
    public var port: Int
    /// Which servers to talk to; `.standalone` (the default) means `host` and `port`.
    public var deployment: RedisDeployment
    /// Sent with AUTH on every (re)connect to a data node before any other command; nil sends
    /// nothing. Sentinels get neither AUTH nor SELECT.
    public var password: String?
    /// Selected with SELECT on every (re)connect when not 0.
    public var database: Int
    /// A connect (TCP plus AUTH/SELECT) taking longer than this counts as failed.
    public var connectTimeout: Duration
    /// A command not answered within this fails with `.timeout`.
    public var commandTimeout: Duration
    /// The first pause between failed reconnect attempts; it doubles after each failure...
    public var reconnectInitialDelay: Duration
    /// ...up to this.
    public var reconnectMaximumDelay: Duration
    /// How many replicas must acknowledge a write made with `waitForReplicas: true` (WAIT);
    /// 0 turns the wait off.
    public var waitReplicas: Int
    /// How long WAIT waits for those acknowledgements; keep it well below `commandTimeout`,
    /// which bounds the reply of the WAIT too.
    public var waitTimeout: Duration
    /// How many replies of read functions (`RedisClient.call(...cachingReplyIf:)`) the client
    /// keeps, invalidated by Redis as their keys change; 0 turns the cache off. Used on a
    /// standalone deployment only.
    public var readCacheCapacity: Int

    public init(
        host: String = "localhost",
        port: Int = 6379,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(5),
        reconnectInitialDelay: Duration = .milliseconds(50),
        reconnectMaximumDelay: Duration = .seconds(2),
        deployment: RedisDeployment = .standalone,
        waitReplicas: Int = 0,
        waitTimeout: Duration = .seconds(1),
        readCacheCapacity: Int = 0
    ) {
        self.host = host
        self.port = port
        self.deployment = deployment
        self.waitReplicas = waitReplicas
        self.waitTimeout = waitTimeout
        self.readCacheCapacity = readCacheCapacity
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.reconnectInitialDelay = reconnectInitialDelay
        self.reconnectMaximumDelay = reconnectMaximumDelay
    }

    /// "host:port", as error messages name the server (for a cluster or Sentinel deployment,
    /// what it starts from).
    public var endpoint: String {
        switch deployment {
        case .standalone: "\(host):\(port)"
        case .cluster(let seeds): "cluster " + seeds.map(\.description).joined(separator: ",")
        case .sentinel(_, let masterName): "sentinel master \(masterName)"
        }
    }

    /// The same settings for one node of the deployment.
    func node(_ endpoint: RedisEndpoint) -> RedisConfiguration {
        var node = self
        (node.host, node.port, node.deployment) = (endpoint.host, endpoint.port, .standalone)
        return node
    }

    /// The pause before reconnect attempt number `failures` (1 after the first failure).
    func reconnectDelay(afterFailures failures: Int) -> Duration {
        var delay = reconnectInitialDelay
        for _ in 1..<max(1, failures) where delay < reconnectMaximumDelay { delay *= 2 }
        return min(delay, reconnectMaximumDelay)
    }
}
