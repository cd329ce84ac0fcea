// Measures the RedisClient against a running redis-server, for comparison with redis-benchmark:
// pipelined SET and GET throughput with 16 and 64 concurrent tasks sharing one client (what
// redis-benchmark's -c means for it: that many requests in flight), and publish-to-receive
// latency of Pub/Sub, one message at a time.
//
//   redis-bench --port 6379 [--host 127.0.0.1] [--requests 100000] [--messages 5000]
import RedisClient

struct Options {
    var host = "127.0.0.1"
    var port = 6379
    var requests = 100_000
    var messages = 5_000

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { fatalError("\(flag) needs a value") }
            switch flag {
            case "--host": host = value
            case "--port": port = Int(value) ?? port
            case "--requests": requests = Int(value) ?? requests
            case "--messages": messages = Int(value) ?? messages
            default: fatalError("unknown option \(flag)")
            }
        }
    }
}

/// Runs `requests` commands from `concurrency` tasks; returns requests per second.
func throughput(_ client: RedisClient, concurrency: Int, requests: Int, command: @escaping @Sendable (Int) -> [String]) async throws -> Double {
    let perTask = requests / concurrency
    let started = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for task in 0..<concurrency {
            group.addTask {
                for _ in 0..<perTask { _ = try await client.send(command(task)) }
            }
        }
        try await group.waitForAll()
    }
    let elapsed = started.duration(to: .now)
    return Double(perTask * concurrency) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

let options = Options(CommandLine.arguments)
let client = RedisClient(configuration: RedisConfiguration(host: options.host, port: options.port))
let value = "xxx"  // redis-benchmark's default 3-byte payload
_ = try await client.send(["PING"])
for concurrency in [16, 64] {
    let set = try await throughput(client, concurrency: concurrency, requests: options.requests) { ["SET", "bench:key:\($0)", value] }
    let get = try await throughput(client, concurrency: concurrency, requests: options.requests) { ["GET", "bench:key:\($0)"] }
    print("redis-bench SET c=\(concurrency): \(Int(set)) requests per second")
    print("redis-bench GET c=\(concurrency): \(Int(get)) requests per second")
}

/// Publishes `count` messages one at a time; returns each publish-to-receive time, sorted.
func publishLatencies(_ client: RedisClient, count: Int) async throws -> [Duration] {
    let subscription = try await client.subscribe(to: ["bench:latency"])
    defer { subscription.close() }
    var messages = subscription.makeAsyncIterator()
    var latencies: [Duration] = []
    latencies.reserveCapacity(count)
    for index in 0..<count {
        let started = ContinuousClock.now
        _ = try await client.publish(channel: "bench:latency", message: String(index))
        guard case .message? = await messages.next() else { fatalError("subscription ended") }
        latencies.append(started.duration(to: .now))
    }
    return latencies.sorted()
}

let latencies = try await publishLatencies(client, count: options.messages)
let p50 = milliseconds(latencies[latencies.count / 2])
let p99 = milliseconds(latencies[latencies.count * 99 / 100])
print("redis-bench PUBLISH->message latency (\(options.messages) messages): p50 \((p50 * 1000).rounded() / 1000) ms, p99 \((p99 * 1000).rounded() / 1000) ms")
client.close()
