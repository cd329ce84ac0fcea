// Where the Redis server is and how patient to be with it. A plain value: every connection a
// client opens (commands, WATCH transactions, each subscription) is built from the same one, so
// a reconnect always repeats the same AUTH and SELECT.

/// How to reach one Redis server, and the timeouts and reconnect pacing to use with it.
public struct RedisConfiguration: Sendable, Equatable {
    public var host: String
    public var port: Int
    /// Sent with AUTH on every (re)connect before any other command; nil sends nothing.
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

    public init(
        host: String = "localhost",
        port: Int = 6379,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(5),
        reconnectInitialDelay: Duration = .milliseconds(50),
        reconnectMaximumDelay: Duration = .seconds(2)
    ) {
        self.host = host
        self.port = port
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.reconnectInitialDelay = reconnectInitialDelay
        self.reconnectMaximumDelay = reconnectMaximumDelay
    }

    /// "host:port", as error messages name the server.
    public var endpoint: String { "\(host):\(port)" }

    /// The pause before reconnect attempt number `failures` (1 after the first failure).
    func reconnectDelay(afterFailures failures: Int) -> Duration {
        var delay = reconnectInitialDelay
        for _ in 1..<max(1, failures) where delay < reconnectMaximumDelay { delay *= 2 }
        return min(delay, reconnectMaximumDelay)
    }
}
