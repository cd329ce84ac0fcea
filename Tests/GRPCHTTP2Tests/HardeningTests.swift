// The server against hostile and dead peers, over real loopback sockets with HTTP/2 frames
// written by hand: the handshake bound (silent TCP, a TLS handshake stalled mid-ClientHello),
// eviction at the connection limit, the per-peer cap, keepalive and the ping-abuse policy.
import EventLoop
import Foundation
import GRPCHTTP2
import PlatformProtos
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP socket that speaks HTTP/2 by hand. Use it from `blocking { }`, never from
/// the cooperative pool directly.
final class RawConnection: @unchecked Sendable {
    let fd: Int32
    /// Closing twice would close whatever descriptor another test got in the meantime.
    private let closed = Atomic<Bool>(false)

    struct Failure: Error {
        let what: String
    }

    /// Connects to 127.0.0.1:`port`, from `source` (another loopback address) if given.
    init(port: Int, source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(what: "socket") }
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, source, &local.sin_addr)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { Glibc.close(fd); throw Failure(what: "bind \(source)") }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { Glibc.close(fd); throw Failure(what: "connect") }
    }

    func close() {
        if !closed.exchange(true, ordering: .relaxed) { Glibc.close(fd) }
    }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    enum ReadResult: Equatable {
        case bytes([UInt8])
        case eof
        case timeout
    }

    /// Up to `count` bytes, waiting at most `timeout`.
    func read(upTo count: Int = 65536, timeout: Duration) -> ReadResult {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)) > 0 else {
            return .timeout
        }
        var buffer = [UInt8](repeating: 0, count: count)
        let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, count, 0) }
        if received <= 0 { return .eof }  // a reset counts as closed too
        return .bytes(Array(buffer[0..<received]))
    }

    /// Waits for the server to close the connection, discarding what it sends; false on timeout.
    func waitForClose(within timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        repeat {
            switch read(timeout: max(.zero, deadline - ContinuousClock.now)) {
            case .eof: return true
            case .timeout: return false
            case .bytes: continue
            }
        } while ContinuousClock.now < deadline
        return false
    }

    // MARK: - HTTP/2 by hand

    struct Frame: Equatable {
        let type: UInt8
        let flags: UInt8
        let stream: UInt32
        let payload: [UInt8]
    }

    private var input: [UInt8] = []

    /// The next frame, nil at EOF or after `timeout`.
    func readFrame(timeout: Duration) -> Frame? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if input.count >= 9 {
                let length = Int(input[0]) << 16 | Int(input[1]) << 8 | Int(input[2])
                if input.count >= 9 + length {
                    let stream = UInt32(input[5] & 0x7f) << 24 | UInt32(input[6]) << 16 | UInt32(input[7]) << 8 | UInt32(input[8])
                    let frame = Frame(type: input[3], flags: input[4], stream: stream, payload: Array(input[9..<9 + length]))
                    input.removeFirst(9 + length)
                    return frame
                }
            }
            let now = ContinuousClock.now
            guard now < deadline, case .bytes(let bytes) = read(timeout: deadline - now) else { return nil }
            input += bytes
        }
    }

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, payload: [UInt8] = []) -> [UInt8] {
        let length = payload.count
        return [UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags,
                UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)] + payload
    }

    static let settings: UInt8 = 4, ping: UInt8 = 6, goAway: UInt8 = 7, headers: UInt8 = 1

    /// The client preface and an empty SETTINGS frame, then the server's SETTINGS (acknowledged).
    func handshake() throws {
        send(Self.preface + Self.frame(type: Self.settings))
        while let frame = readFrame(timeout: .seconds(3)) {
            if frame.type == Self.settings, frame.flags & 1 == 0 {
                send(Self.frame(type: Self.settings, flags: 1))
                return
            }
        }
        throw Failure(what: "no SETTINGS from the server")
    }

    func sendPing(_ byte: UInt8 = 1) {
        send(Self.frame(type: Self.ping, payload: [UInt8](repeating: byte, count: 8)))
    }

    /// HEADERS opening a gRPC call on `stream` without ending it (the request body never comes).
    func openCall(stream: UInt32, path: String) {
        // HPACK: every field a literal without indexing, with a literal name (RFC 7541 6.2.2).
        var block: [UInt8] = []
        for (name, value) in [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1"),
                              ("content-type", "application/grpc"), ("te", "trailers")] {
            block += [0, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
        }
        send(Self.frame(type: Self.headers, flags: 0x4, stream: stream, payload: block))
    }
}

/// A plaintext server (the scripted OrderService) with `configure` applied, and a channel to it.
private func hardenedHarness(_ configure: (inout ServerConfiguration) -> Void) throws -> Harness {
    try Harness(tls: nil, client: nil, configure: configure)
}

@Suite struct HardeningTests {
    @Test func aSilentConnectionIsClosedAfterTheHandshakeBound() async throws {
        let harness = try hardenedHarness { $0.handshakeTimeout = .milliseconds(300) }
        let port = harness.server.port
        let (closed, elapsed) = await blocking {
            let started = ContinuousClock.now
            guard let raw = try? RawConnection(port: port) else { return (false, Duration.zero) }
            defer { raw.close() }
            return (raw.waitForClose(within: .seconds(5)), ContinuousClock.now - started)
        }
        #expect(closed)
        #expect(elapsed >= .milliseconds(250))
        // One that finishes its handshake in time stays.
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "on-time")).orderId == "order_for_on-time")
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "later")).orderId == "order_for_later")
        await harness.stop()
    }

    @Test func aPrefaceWithoutSettingsIsClosedToo() async throws {
        let harness = try hardenedHarness { $0.handshakeTimeout = .milliseconds(300) }
        let port = harness.server.port
        let closed = await blocking {
            guard let raw = try? RawConnection(port: port) else { return false }
            defer { raw.close() }
            raw.send(RawConnection.preface)  // and no SETTINGS
            return raw.waitForClose(within: .seconds(5))
        }
        #expect(closed)
        await harness.stop()
    }

    @Test func aStalledTLSHandshakeIsClosedWhileOthersAreServed() async throws {
        let pki = try TestPKI.get()
        let harness = try Harness(tls: try pki.server(), client: try pki.client()) {
            $0.loopCount = 1  // one loop: a stalled handshake there would stall everyone
            $0.handshakeTimeout = .milliseconds(800)
        }
        let port = harness.server.port
        let stalled = Task {
            await blocking { () -> (Bool, Duration) in
                guard let raw = try? RawConnection(port: port) else { return (false, .zero) }
                defer { raw.close() }
                let started = ContinuousClock.now
                // A TLS record header announcing a 512-byte ClientHello, and only its start.
                raw.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03] + [UInt8](repeating: 7, count: 32))
                return (raw.waitForClose(within: .seconds(5)), ContinuousClock.now - started)
            }
        }
        try await Task.sleep(for: .milliseconds(100))
        for index in 0..<20 {
            let fresh = Harness.channel(to: port, tls: try pki.client())
            #expect(try await OrderServiceClient(transport: fresh).placeOrder(PlaceOrderRequest(customerId: "c\(index)")).orderId == "order_for_c\(index)")
            fresh.close()
        }
        let (closed, elapsed) = await stalled.value
        #expect(closed)
        #expect(elapsed >= .milliseconds(700))
        await harness.stop()
    }

    @Test func anIdleFloodAtTheLimitEvictsInsteadOfLockingOut() async throws {
        let harness = try hardenedHarness {
            $0.maxConnections = 200
            $0.maxConnectionsPerPeer = 1000
            // Long enough that nothing is closed by the bound before the checks below, even on a
            // loaded machine; the bound is then what closes the rest.
            $0.handshakeTimeout = .seconds(10)
        }
        let port = harness.server.port
        // 240 connections that never send the preface: the last 40 push out the oldest.
        let flood = await blocking { (0..<240).compactMap { _ in try? RawConnection(port: port) } }
        #expect(flood.count == 240)
        // Once the server has taken them all, 40 have made room for the others.
        var evictedEarly = 0
        for _ in 0..<500 where evictedEarly < 40 {
            evictedEarly = await blocking { flood.filter { $0.waitForClose(within: .zero) }.count }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(evictedEarly == 40)
        let started = ContinuousClock.now
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "honest")).orderId == "order_for_honest")
        // Served by eviction, well before the handshake bound would have freed anything.
        #expect(ContinuousClock.now - started < .seconds(5))
        // Every flood connection is closed: evicted, or at the handshake bound.
        let closed = await blocking { flood.filter { $0.waitForClose(within: .seconds(15)) }.count }
        #expect(closed == 240)
        for raw in flood { raw.close() }
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "still")).orderId == "order_for_still")
        await harness.stop()
    }

    @Test func atTheLimitTheConnectionIdleLongestMakesRoom() async throws {
        let harness = try hardenedHarness {
            $0.maxConnections = 2
            $0.loopCount = 1
        }
        let port = harness.server.port
        let (first, second) = try await blocking { () -> Result<(RawConnection, RawConnection), any Error> in
            Result {
                let first = try RawConnection(port: port)
                try first.handshake()
                Glibc.usleep(20_000)
                let second = try RawConnection(port: port)
                try second.handshake()
                return (first, second)
            }
        }.get()
        defer { first.close(); second.close() }
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "new")).orderId == "order_for_new")
        // The older idle one got GOAWAY and was closed; the other stays.
        let (firstClosed, secondClosed) = await blocking {
            var sawGoAway = false
            while !sawGoAway, let frame = first.readFrame(timeout: .seconds(3)) { sawGoAway = frame.type == RawConnection.goAway }
            return (sawGoAway && first.waitForClose(within: .seconds(3)), second.waitForClose(within: .milliseconds(300)))
        }
        #expect(firstClosed)
        #expect(!secondClosed)
        await harness.stop()
    }

    @Test func atTheLimitWithEveryConnectionBusyTheNewOneIsRefused() async throws {
        let started = Atomic<Int>(0)
        let release = Atomic<Bool>(false)
        let service = ScriptedOrderService(place: { request, _ in
            if request.customerId == "hold" {
                started.add(1, ordering: .relaxed)
                while !release.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
            }
            return PlaceOrderResponse(orderId: "order_for_\(request.customerId)", status: "PLACED")
        })
        let harness = try Harness(service) {
            $0.maxConnections = 2
            $0.loopCount = 1
        }
        let port = harness.server.port
        let busy = [Harness.channel(to: port, tls: nil), Harness.channel(to: port, tls: nil)]
        let calls = busy.map { channel in
            Task { try await OrderServiceClient(transport: channel).placeOrder(PlaceOrderRequest(customerId: "hold")) }
        }
        try await eventually { started.load(ordering: .relaxed) == 2 }
        let refused = Harness.channel(to: port, tls: nil)
        let error = await #expect(throws: RPCError.self) {
            try await OrderServiceClient(transport: refused).placeOrder(PlaceOrderRequest(customerId: "third"))
        }
        #expect(error?.code == .unavailable)
        release.store(true, ordering: .relaxed)
        for call in calls { #expect(try await call.value.orderId == "order_for_hold") }
        // Now both are idle: the newcomer takes the place of one.
        #expect(try await OrderServiceClient(transport: refused).placeOrder(PlaceOrderRequest(customerId: "third")).orderId == "order_for_third")
        for channel in busy + [refused] { channel.close() }
        harness.channel.close()
        await harness.server.shutdown(gracePeriod: .milliseconds(200))
    }

    @Test func onePeerAddressCannotHoldMoreThanItsCap() async throws {
        let harness = try hardenedHarness {
            $0.maxConnectionsPerPeer = 3
            $0.loopCount = 1
        }
        let port = harness.server.port
        let outcome = await blocking { () -> (held: Int, fourthClosed: Bool, otherServed: Bool, afterRelease: Bool) in
            let held = (0..<3).compactMap { _ -> RawConnection? in
                guard let raw = try? RawConnection(port: port), (try? raw.handshake()) != nil else { return nil }
                return raw
            }
            defer { for raw in held { raw.close() } }
            let fourth = try? RawConnection(port: port)
            let fourthClosed = fourth?.waitForClose(within: .seconds(2)) ?? false
            fourth?.close()
            // Another address is not affected.
            let other = try? RawConnection(port: port, source: "127.0.0.2")
            let otherServed = (try? other?.handshake()) != nil
            other?.close()
            // Closing one frees its place, once the server has seen the close (a loaded machine
            // may take a while: try again for up to 5 s).
            held[0].close()
            var afterRelease = false
            let deadline = ContinuousClock.now + .seconds(5)
            while !afterRelease, ContinuousClock.now < deadline {
                Glibc.usleep(100_000)
                let again = try? RawConnection(port: port)
                afterRelease = (try? again?.handshake()) != nil && !(again?.waitForClose(within: .milliseconds(200)) ?? true)
                again?.close()
            }
            return (held.count, fourthClosed, otherServed, afterRelease)
        }
        #expect(outcome.held == 3)
        #expect(outcome.fourthClosed)
        #expect(outcome.otherServed)
        #expect(outcome.afterRelease)
        await harness.stop()
    }

    @Test func keepalivePingsAndClosesAPeerThatNeverAnswers() async throws {
        let harness = try hardenedHarness {
            $0.keepaliveInterval = .milliseconds(200)
            $0.keepaliveTimeout = .milliseconds(300)
        }
        let port = harness.server.port
        let (pinged, closed) = await blocking { () -> (Bool, Bool) in
            guard let raw = try? RawConnection(port: port), (try? raw.handshake()) != nil else { return (false, false) }
            defer { raw.close() }
            var pinged = false
            while let frame = raw.readFrame(timeout: .seconds(3)) {
                if frame.type == RawConnection.ping, frame.flags & 1 == 0 { pinged = true }
            }
            return (pinged, raw.waitForClose(within: .milliseconds(100)) || raw.read(timeout: .zero) == .eof)
        }
        #expect(pinged)
        #expect(closed)
        await harness.stop()
    }

    @Test func keepaliveKeepsAPeerThatAnswers() async throws {
        let harness = try hardenedHarness {
            $0.keepaliveInterval = .milliseconds(150)
            $0.keepaliveTimeout = .seconds(2)  // generous: the answer must not lose a race with a busy machine
        }
        let port = harness.server.port
        let (pings, open) = await blocking { () -> (Int, Bool) in
            guard let raw = try? RawConnection(port: port), (try? raw.handshake()) != nil else { return (0, false) }
            defer { raw.close() }
            var pings = 0
            let deadline = ContinuousClock.now + .milliseconds(1500)
            while ContinuousClock.now < deadline {
                guard let frame = raw.readFrame(timeout: deadline - ContinuousClock.now) else { break }
                if frame.type == RawConnection.ping, frame.flags & 1 == 0 {
                    pings += 1
                    raw.send(RawConnection.frame(type: RawConnection.ping, flags: 1, payload: frame.payload))
                }
            }
            return (pings, !raw.waitForClose(within: .milliseconds(100)))
        }
        #expect(pings >= 2)
        #expect(open)
        await harness.stop()
    }

    @Test func aPingFloodWithoutCallsGetsEnhanceYourCalm() async throws {
        let harness = try hardenedHarness { _ in }
        let port = harness.server.port
        let outcome = await blocking { () -> (acks: Int, goAway: RawConnection.Frame?, closed: Bool) in
            guard let raw = try? RawConnection(port: port), (try? raw.handshake()) != nil else { return (0, nil, false) }
            defer { raw.close() }
            for index in 0..<6 { raw.sendPing(UInt8(index)) }
            var acks = 0
            var goAway: RawConnection.Frame?
            while let frame = raw.readFrame(timeout: .seconds(3)) {
                if frame.type == RawConnection.ping, frame.flags & 1 != 0 { acks += 1 }
                if frame.type == RawConnection.goAway { goAway = frame }
            }
            return (acks, goAway, raw.read(timeout: .milliseconds(100)) == .eof)
        }
        let goAway = try #require(outcome.goAway)
        // GOAWAY: last stream id (4 bytes), error code (4 bytes), debug data.
        #expect(Array(goAway.payload[4..<8]) == [0, 0, 0, 0x0b])  // ENHANCE_YOUR_CALM
        #expect(String(decoding: goAway.payload[8...], as: UTF8.self) == "too_many_pings")
        #expect(outcome.acks >= 3)
        #expect(outcome.closed)
        // Others are unaffected.
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "calm")).orderId == "order_for_calm")
        await harness.stop()
    }

    @Test func pingsWhileACallIsOpenAreAllowed() async throws {
        let harness = try hardenedHarness { _ in }
        let port = harness.server.port
        let outcome = await blocking { () -> (acks: Int, goAway: Bool) in
            guard let raw = try? RawConnection(port: port), (try? raw.handshake()) != nil else { return (0, true) }
            defer { raw.close() }
            raw.openCall(stream: 1, path: OrderServiceMethods.placeOrder.path)
            for index in 0..<10 { raw.sendPing(UInt8(index)) }
            var acks = 0
            var goAway = false
            while acks < 10, let frame = raw.readFrame(timeout: .seconds(2)) {
                if frame.type == RawConnection.ping, frame.flags & 1 != 0 { acks += 1 }
                if frame.type == RawConnection.goAway { goAway = true }
            }
            return (acks, goAway)
        }
        #expect(outcome.acks == 10)
        #expect(!outcome.goAway)
        await harness.stop()
    }
}
