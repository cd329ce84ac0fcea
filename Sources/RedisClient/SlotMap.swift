// Redis Cluster's keyspace: which of the 16384 hash slots a key is in, which argument of a
// command is its key, and which master serves each slot.
//
// Slots follow the cluster specification: CRC16 (XMODEM: polynomial 0x1021, initial value 0) of
// the key modulo 16384, where a key holding a non-empty `{hash tag}` is hashed by the tag alone,
// so `{order:1}:items` and `{order:1}:status` share a slot (and a node, and a script).
//
// The slot map is a value: 16384 small master indices plus the masters' addresses. It is read
// from CLUSTER SHARDS (7.0+), or from CLUSTER SLOTS on older servers, and patched one slot at a
// time from MOVED replies between full reads.

/// The hash slot of a key, as Redis Cluster computes it.
public enum RedisHashSlot {
    public static let count = 16384

    /// The slot of `key`, honouring a `{hash tag}`.
    public static func of(_ key: String) -> Int { of(Array(key.utf8)) }

    public static func of(_ key: [UInt8]) -> Int {
        var hashed = key[...]
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
           let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 {
            hashed = key[(open + 1)..<close]
        }
        return Int(crc16(hashed)) % count
    }

    /// CRC16-XMODEM, the checksum behind slots ("123456789" gives 0x31C3).
    public static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return crc
    }
}

/// Where the key of a command is, for routing it in a cluster. The table covers the commands
/// the platform uses; anything not listed is taken to have its key at argv[1]:
/// - no key (any master serves them): PING, ECHO, INFO, TIME, SCRIPT, FUNCTION, PUBLISH, WAIT,
///   MULTI, EXEC, DISCARD, UNWATCH, CLUSTER, CLIENT, CONFIG, DBSIZE, FLUSHALL, FLUSHDB, COMMAND
/// - EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, FCALL, FCALL_RO: the first key after numkeys (none if 0)
/// - XREAD, XREADGROUP: the first key after STREAMS
/// - XGROUP, XINFO, OBJECT, MEMORY: the key after the subcommand (argv[2])
/// - everything else (GET, SET, DEL, EXISTS, EXPIRE, INCR, H*, S*, Z*, L*, X*, WATCH...): argv[1]
enum CommandKeys {
    private static let keyless: Set<String> = [
        "PING", "ECHO", "INFO", "TIME", "SCRIPT", "FUNCTION", "PUBLISH", "WAIT", "MULTI", "EXEC", "DISCARD",
        "UNWATCH", "CLUSTER", "CLIENT", "CONFIG", "DBSIZE", "FLUSHALL", "FLUSHDB", "COMMAND",
    ]
    private static let numkeysAt2: Set<String> = ["EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"]
    private static let keyAfterSubcommand: Set<String> = ["XGROUP", "XINFO", "OBJECT", "MEMORY"]

    /// The key the command is routed by, or nil when any master will do.
    static func firstKey(of argv: [[UInt8]]) -> [UInt8]? {
        guard let first = argv.first else { return nil }
        let name = String(decoding: first, as: UTF8.self).uppercased()
        if keyless.contains(name) { return nil }
        if numkeysAt2.contains(name) {
            guard argv.count > 3, let count = Int(String(decoding: argv[2], as: UTF8.self)), count > 0 else { return nil }
            return argv[3]
        }
        if name == "XREAD" || name == "XREADGROUP" {
            let streams = argv.firstIndex { String(decoding: $0, as: UTF8.self).uppercased() == "STREAMS" }
            return streams.flatMap { $0 + 1 < argv.count ? argv[$0 + 1] : nil }
        }
        let position = keyAfterSubcommand.contains(name) ? 2 : 1
        return argv.count > position ? argv[position] : nil
    }

    /// The key a batch (MULTI ... EXEC, a script and its WAIT) is routed by: its first key.
    static func firstKey(ofBatch batch: [[[UInt8]]]) -> [UInt8]? {
        batch.lazy.compactMap(firstKey(of:)).first
    }
}

/// Which master serves each hash slot.
struct SlotMap {
    private(set) var masters: [RedisEndpoint] = []
    private var owners = [UInt16](repeating: .max, count: RedisHashSlot.count)

    func master(forSlot slot: Int) -> RedisEndpoint? {
        let owner = owners[slot]
        return owner == .max ? nil : masters[Int(owner)]
    }

    /// Every master serves every keyless command; any one will do, the first is as good.
    var anyMaster: RedisEndpoint? { masters.first }

    mutating func assign(_ slots: ClosedRange<Int>, to master: RedisEndpoint) {
        guard slots.lowerBound >= 0, slots.upperBound < RedisHashSlot.count else { return }
        let index = masters.firstIndex(of: master) ?? {
            masters.append(master)
            return masters.count - 1
        }()
        for slot in slots { owners[slot] = UInt16(index) }
    }

    /// Reads a CLUSTER SHARDS reply: per shard, its slot ranges and the master among its nodes
    /// (the online one, when a failed old master is still listed). `asked` stands in for a node
    /// that does not know its own address. Nil when the reply is not one.
    init?(shards reply: RedisReply, asked: RedisEndpoint) {
        guard let shards = reply.array else { return nil }
        for shard in shards {
            let fields = Self.fields(shard)
            guard let ranges = fields["slots"]?.array, let nodes = fields["nodes"]?.array?.map(Self.fields) else { return nil }
            let masters = nodes.filter { $0["role"]?.string == "master" }
            guard let master = masters.first(where: { $0["health"]?.string == "online" }) ?? masters.first,
                  let port = master["port"]?.int else { continue }
            let host = [master["endpoint"]?.string, master["ip"]?.string].compactMap { $0 }.first { !$0.isEmpty && $0 != "?" }
            let endpoint = RedisEndpoint(host: host ?? asked.host, port: Int(port))
            for pair in stride(from: 0, to: ranges.count - 1, by: 2) {
                guard let low = ranges[pair].int, let high = ranges[pair + 1].int, low <= high else { return nil }
                assign(Int(low)...Int(high), to: endpoint)
            }
        }
        guard !masters.isEmpty else { return nil }
    }

    /// Reads a CLUSTER SLOTS reply: [start, end, [master host, port, id], replicas...] per range.
    init?(slots reply: RedisReply, asked: RedisEndpoint) {
        guard let ranges = reply.array else { return nil }
        for range in ranges {
            guard let parts = range.array, parts.count >= 3, let low = parts[0].int, let high = parts[1].int, low <= high,
                  let node = parts[2].array, node.count >= 2, let port = node[1].int else { return nil }
            let host = node[0].string.flatMap { $0.isEmpty || $0 == "?" ? nil : $0 } ?? asked.host
            assign(Int(low)...Int(high), to: RedisEndpoint(host: host, port: Int(port)))
        }
        guard !masters.isEmpty else { return nil }
    }

    /// A RESP2 map (a flat array of alternating names and values) as a dictionary.
    private static func fields(_ reply: RedisReply) -> [String: RedisReply] {
        let items = reply.array ?? []
        var fields: [String: RedisReply] = [:]
        for pair in stride(from: 0, to: items.count - 1, by: 2) {
            if let name = items[pair].string { fields[name] = items[pair + 1] }
        }
        return fields
    }
}

/// A MOVED or ASK redirect: the node to send the command to instead.
struct Redirect {
    enum Kind { case moved, ask }
    let kind: Kind
    let slot: Int
    let target: RedisEndpoint

    /// Parses "MOVED 3999 127.0.0.1:6381" (or ASK); an empty host means the node that replied.
    init?(_ message: String, from node: RedisEndpoint) {
        let parts = message.split(separator: " ")
        guard parts.count == 3, let slot = Int(parts[1]), let colon = parts[2].lastIndex(of: ":"),
              let port = Int(parts[2][parts[2].index(after: colon)...]) else { return nil }
        switch parts[0] {
        case "MOVED": kind = .moved
        case "ASK": kind = .ask
        default: return nil
        }
        let host = parts[2][..<colon]
        self.slot = slot
        target = RedisEndpoint(host: host.isEmpty ? node.host : String(host), port: port)
    }
}
