// Pure parts of the cluster and deployment support: slots, hash tags, the key table, address
// parsing. No server needed.
@testable import RedisClient
import Testing

@Suite struct SlotTests {
    @Test func crc16MatchesTheClusterSpecificationVector() {
        #expect(RedisHashSlot.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(RedisHashSlot.crc16([]) == 0)
    }

    @Test func slotsAndHashTags() {
        #expect(RedisHashSlot.of("123456789") == 0x31C3 % 16384)
        #expect(RedisHashSlot.of("foo") == 12182)  // CLUSTER KEYSLOT foo
        #expect(RedisHashSlot.of("{user1000}.following") == RedisHashSlot.of("{user1000}.followers"))
        #expect(RedisHashSlot.of("{user1000}.following") == RedisHashSlot.of("user1000"))
        // The spec's edge cases: the first { and the first } after it; an empty tag hashes all.
        #expect(RedisHashSlot.of("foo{}{bar}") == Int(RedisHashSlot.crc16(Array("foo{}{bar}".utf8))) % 16384)
        #expect(RedisHashSlot.of("foo{{bar}}zap") == RedisHashSlot.of("{bar"))
        #expect(RedisHashSlot.of("foo{bar}{zap}") == RedisHashSlot.of("bar"))
        #expect(RedisHashSlot.of("no-close{tag") == Int(RedisHashSlot.crc16(Array("no-close{tag".utf8))) % 16384)
    }

    @Test func keyPositions() {
        func key(_ command: [String]) -> String? {
            CommandKeys.firstKey(of: command.map { Array($0.utf8) }).map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(key(["GET", "k"]) == "k")
        #expect(key(["hset", "h", "f", "v"]) == "h")
        #expect(key(["EVALSHA", "abc", "2", "k1", "k2", "arg"]) == "k1")
        #expect(key(["EVAL", "return 1", "0", "arg"]) == nil)
        #expect(key(["XREAD", "COUNT", "10", "BLOCK", "100", "STREAMS", "s1", "s2", "$", "$"]) == "s1")
        #expect(key(["XREADGROUP", "GROUP", "g", "c", "streams", "s", ">"]) == "s")
        #expect(key(["XGROUP", "CREATE", "s", "g", "$"]) == "s")
        #expect(key(["SCRIPT", "LOAD", "return 1"]) == nil)
        #expect(key(["PUBLISH", "channel", "m"]) == nil)
        #expect(key(["PING"]) == nil)
        let batch = [["MULTI"], ["SET", "a", "1"], ["EXEC"]].map { $0.map { Array($0.utf8) } }
        #expect(CommandKeys.firstKey(ofBatch: batch) == Array("a".utf8))
    }

    @Test func redirectsParse() {
        let node = RedisEndpoint(host: "10.0.0.1", port: 7000)
        let moved = Redirect("MOVED 3999 127.0.0.1:6381", from: node)
        #expect(moved?.kind == .moved && moved?.slot == 3999 && moved?.target == RedisEndpoint(host: "127.0.0.1", port: 6381))
        #expect(Redirect("ASK 1 :7002", from: node)?.target == RedisEndpoint(host: "10.0.0.1", port: 7002))
        #expect(Redirect("ERR something", from: node) == nil)
    }
}

@Suite struct EndpointParsingTests {
    @Test func listsParse() throws {
        #expect(try RedisEndpoint.list(parsing: "127.0.0.1:7000, redis-b:7001") == [
            RedisEndpoint(host: "127.0.0.1", port: 7000), RedisEndpoint(host: "redis-b", port: 7001),
        ])
        #expect(try RedisEndpoint(parsing: "[::1]:6379") == RedisEndpoint(host: "::1", port: 6379))
        #expect(RedisEndpoint(host: "::1", port: 6379).description == "[::1]:6379")
    }

    @Test func badInputIsRefusedWithAClearMessage() {
        for bad in ["", "host", "host:", ":6379", "host:0", "host:70000", "host:abc", "a:1,,b:2", "a:1,"] {
            do {
                _ = try RedisEndpoint.list(parsing: bad)
                Issue.record("accepted \"\(bad)\"")
            } catch {
                #expect(error.description.contains("expected host:port"))
            }
        }
    }

    @Test func theDefaultDeploymentIsStandalone() {
        let configuration = RedisConfiguration()
        #expect(configuration.deployment == .standalone)
        #expect(configuration.waitReplicas == 0 && configuration.waitTimeout == .seconds(1))
    }
}
