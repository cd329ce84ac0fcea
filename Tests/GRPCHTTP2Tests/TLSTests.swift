// TLS between our client and our server over real loopback sockets, with a test CA made by the
// `openssl` command at test time: calls of every kind, what the client verifies (chain, name,
// ALPN), mTLS, and the wrong side of each pairing (plaintext against TLS and the reverse)
// failing cleanly while the server carries on.
import EventLoop
import Foundation
import GRPCHTTP2
import GRPCServices
import PlatformProtos
import Synchronization
import Testing
import TestSupport

/// A test PKI in a temporary directory: a CA, a server certificate for 127.0.0.1 (IP SAN) and
/// localhost, a client certificate from the same CA, and a second CA nobody trusts.
struct TestPKI: Sendable {
    let directory: String
    var caCert: String { "\(directory)/ca.pem" }
    var serverCert: String { "\(directory)/server.pem" }
    var serverKey: String { "\(directory)/server.key" }
    var clientCert: String { "\(directory)/client.pem" }
    var clientKey: String { "\(directory)/client.key" }
    var otherCACert: String { "\(directory)/other-ca.pem" }
    /// A client certificate issued by the CA nobody trusts.
    var strangerCert: String { "\(directory)/stranger.pem" }
    var strangerKey: String { "\(directory)/stranger.key" }

    /// Made once per test process.
    static let shared: Result<TestPKI, any Error> = Result { try TestPKI.make() }

    static func get() throws -> TestPKI { try shared.get() }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private static func make() throws -> TestPKI {
        // Directories of earlier test processes that have exited go first.
        let temporary = NSTemporaryDirectory()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? [] where name.hasPrefix("grpc-tls-tests-") {
            if let pid = Int32(name.dropFirst("grpc-tls-tests-".count)), kill(pid, 0) != 0 {
                try? FileManager.default.removeItem(atPath: temporary + name)
            }
        }
        let directory = temporary + "grpc-tls-tests-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let pki = TestPKI(directory: directory)
        func ec(_ out: String) -> [String] { ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", out] }
        for ca in ["ca", "other-ca"] {
            try openssl(["req", "-x509"] + ec("\(directory)/\(ca).key") + ["-out", "\(directory)/\(ca).pem", "-days", "30", "-subj", "/CN=test-\(ca)"])
        }
        try leaf("server", ca: "ca", extensions: "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", in: directory)
        try leaf("client", ca: "ca", extensions: "extendedKeyUsage=clientAuth\n", in: directory)
        try leaf("stranger", ca: "other-ca", extensions: "extendedKeyUsage=clientAuth\n", in: directory)
        return pki
    }

    private static func leaf(_ name: String, ca: String, extensions: String, in directory: String) throws {
        let ext = "\(directory)/\(name).ext"
        try extensions.write(toFile: ext, atomically: true, encoding: .utf8)
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(directory)/\(name).key",
                     "-out", "\(directory)/\(name).csr", "-subj", "/CN=\(name == "server" ? "localhost" : name)"])
        try openssl(["x509", "-req", "-in", "\(directory)/\(name).csr", "-CA", "\(directory)/\(ca).pem", "-CAkey", "\(directory)/\(ca).key",
                     "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", "\(directory)/\(name).pem"])
    }

    static func openssl(_ arguments: [String]) throws {
        let (status, output) = try ChildProcess.run(["/usr/bin/openssl"] + arguments)
        guard status == 0 else {
            throw Failure(description: "openssl \(arguments.joined(separator: " ")) failed: \(output)")
        }
    }

    func server(clientCA: Bool = false) throws -> ServerTLSConfiguration {
        try ServerTLSConfiguration(certificateChainFile: serverCert, privateKeyFile: serverKey, clientCAFile: clientCA ? caCert : nil)
    }

    func client(trusting roots: String? = nil, certificate: Bool = false, serverNameOverride: String? = nil) throws -> ClientTLSConfiguration {
        try ClientTLSConfiguration(trustRootsFile: roots ?? caCert, certificateChainFile: certificate ? clientCert : nil,
                                   privateKeyFile: certificate ? clientKey : nil, serverNameOverride: serverNameOverride)
    }
}

extension Harness {
    /// A TLS server (the scripted OrderService, health and the streaming test service) and a
    /// channel to it with `client` TLS (nil: plaintext) to `host`.
    init(tls: ServerTLSConfiguration?, client: ClientTLSConfiguration?, host: String = "127.0.0.1", probe: Probe = Probe(),
         configure: (inout ServerConfiguration) -> Void = { _ in }) throws {
        var configuration = ServerConfiguration(host: "127.0.0.1", port: 0, loopCount: 2)
        configuration.tls = tls
        configure(&configuration)
        health = HealthService(services: [OrderServiceMethods.serviceName, StreamTest.name])
        server = GRPCServer(configuration: configuration,
                            services: [ScriptedOrderService().service, health.service, StreamTest.service(probe)])
        try server.start()
        channel = Self.channel(to: server.port, tls: client, host: host)
    }

    static func channel(to port: Int, tls: ClientTLSConfiguration?, host: String = "127.0.0.1") -> GRPCChannel {
        var configuration = ClientConfiguration()
        configuration.tls = tls
        configuration.connectTimeout = .seconds(3)
        return GRPCChannel(host: host, port: port, configuration: configuration)
    }
}

@Suite struct TLSTests {
    @Test func callsOfEveryKindWorkOverTLS() async throws {
        let pki = try TestPKI.get()
        let harness = try Harness(tls: try pki.server(), client: try pki.client())
        let response = try await harness.client.placeOrder(PlaceOrderRequest(customerId: "tls", items: ["burger"], totalPrice: 3))
        #expect(response == PlaceOrderResponse(orderId: "order_for_tls", status: "PLACED"))
        let statuses = try await harness.client.watchOrder(WatchOrderRequest(orderId: "o1")) { updates in
            var statuses: [String] = []
            for try await update in updates { statuses.append(update.status) }
            return statuses
        }
        #expect(statuses == ["PLACED", "ACCEPTED", "REJECTED"])
        // Many messages both ways, far past one TLS record and one flow-control window.
        let numbers = try await harness.channel.serverStreaming(StreamTest.count, OrderUpdate(driverId: String(repeating: "x", count: 100),
                                                                                               updatedAtUnixMs: 20_000)) { responses in
            var numbers: [Int64] = []
            for try await message in responses { numbers.append(message.updatedAtUnixMs) }
            return numbers
        }
        #expect(numbers == Array(0..<20_000))
        let padding = String(repeating: "p", count: 20_000)
        let echoed = try await harness.channel.bidirectionalStreaming(StreamTest.echo, requests: { requests in
            for index in 0..<500 { try await requests.write(OrderUpdate(driverId: padding, updatedAtUnixMs: Int64(index))) }
        }, onResponse: { responses in
            var echoed: [Int64] = []
            for try await message in responses {
                #expect(message.driverId.count == padding.count)
                echoed.append(message.updatedAtUnixMs)
            }
            return echoed
        })
        #expect(echoed == Array(0..<500))
        await harness.stop()
    }

    @Test func manyConcurrentCallsShareOneTLSConnection() async throws {
        let pki = try TestPKI.get()
        let harness = try Harness(tls: try pki.server(), client: try pki.client())
        let client = harness.client
        try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<400 {
                group.addTask { try await client.placeOrder(PlaceOrderRequest(customerId: "c\(index)")).orderId }
            }
            var seen = Set<String>()
            for try await id in group { seen.insert(id) }
            #expect(seen.count == 400)
        }
        await harness.stop()
    }

    @Test func theServerNameIsVerifiedByDNSNameOrOverride() async throws {
        let pki = try TestPKI.get()
        // By DNS name: the certificate names localhost.
        let byName = try Harness(tls: try pki.server(), client: try pki.client(), host: "localhost")
        #expect(try await byName.client.placeOrder(PlaceOrderRequest(customerId: "dns")).orderId == "order_for_dns")
        await byName.stop()
        // An override the certificate carries works; one it does not is refused.
        let server = try Harness(tls: try pki.server(), client: try pki.client(serverNameOverride: "localhost"))
        #expect(try await server.client.placeOrder(PlaceOrderRequest(customerId: "o")).orderId == "order_for_o")
        let wrong = Harness.channel(to: server.server.port, tls: try pki.client(serverNameOverride: "orders.example.com"))
        let error = await #expect(throws: RPCError.self) {
            try await OrderServiceClient(transport: wrong).placeOrder(PlaceOrderRequest())
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("certificate verify failed: hostname mismatch") == true, "\(String(describing: error))")
        wrong.close()
        await server.stop()
    }

    @Test func aClientThatDoesNotTrustTheCAFailsNamingTheVerification() async throws {
        let pki = try TestPKI.get()
        let harness = try Harness(tls: try pki.server(), client: try pki.client(trusting: pki.otherCACert))
        let error = await #expect(throws: RPCError.self) {
            try await harness.client.placeOrder(PlaceOrderRequest())
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("certificate verify failed") == true, "\(String(describing: error))")
        #expect(error?.message.contains("local issuer") == true, "\(String(describing: error))")
        // The server carries on.
        let good = Harness.channel(to: harness.server.port, tls: try pki.client())
        #expect(try await OrderServiceClient(transport: good).placeOrder(PlaceOrderRequest(customerId: "ok")).orderId == "order_for_ok")
        good.close()
        await harness.stop()
    }

    @Test func mutualTLSAcceptsTheCAsClientsOnly() async throws {
        let pki = try TestPKI.get()
        let harness = try Harness(tls: try pki.server(clientCA: true), client: try pki.client(certificate: true))
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "m")).orderId == "order_for_m")
        // No certificate: TLS 1.3 lets the client finish its side, then the server's alert ends it.
        let anonymous = Harness.channel(to: harness.server.port, tls: try pki.client())
        let error = await #expect(throws: RPCError.self) {
            try await OrderServiceClient(transport: anonymous).placeOrder(PlaceOrderRequest())
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("certificate required") == true, "\(String(describing: error))")
        anonymous.close()
        // A certificate from another CA is refused too.
        let stranger = Harness.channel(to: harness.server.port, tls: try ClientTLSConfiguration(
            trustRootsFile: pki.caCert, certificateChainFile: pki.strangerCert, privateKeyFile: pki.strangerKey))
        let strangerError = await #expect(throws: RPCError.self) {
            try await OrderServiceClient(transport: stranger).placeOrder(PlaceOrderRequest())
        }
        #expect(strangerError?.code == .unavailable)
        stranger.close()
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "again")).orderId == "order_for_again")
        await harness.stop()
    }

    @Test func aPlaintextClientAgainstATLSPortFailsCleanly() async throws {
        let pki = try TestPKI.get()
        let harness = try Harness(tls: try pki.server(), client: try pki.client())
        let plaintext = Harness.channel(to: harness.server.port, tls: nil)
        let error = await #expect(throws: RPCError.self) {
            try await OrderServiceClient(transport: plaintext).placeOrder(PlaceOrderRequest())
        }
        #expect(error?.code == .unavailable)
        plaintext.close()
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "tls")).orderId == "order_for_tls")
        await harness.stop()
    }

    @Test func aTLSClientAgainstAPlaintextPortFailsCleanly() async throws {
        let pki = try TestPKI.get()
        let harness = try Harness(tls: nil, client: nil)
        let secure = Harness.channel(to: harness.server.port, tls: try pki.client())
        let error = await #expect(throws: RPCError.self) {
            try await OrderServiceClient(transport: secure).placeOrder(PlaceOrderRequest())
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("TLS handshake failed") == true, "\(String(describing: error))")
        secure.close()
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "h2c")).orderId == "order_for_h2c")
        await harness.stop()
    }

    @Test func theServerRequiresALPNh2() async throws {
        let pki = try TestPKI.get()
        let harness = try Harness(tls: try pki.server(), client: try pki.client())
        let port = harness.server.port
        let base = ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", pki.caCert, "-verify_return_error", "-brief"]
        // Offered h2: the handshake succeeds; no ALPN at all, or only http/1.1: refused with an alert.
        #expect(try await sClient(base + ["-alpn", "h2"]).status == 0)
        let none = try await sClient(base)
        #expect(none.status != 0)
        #expect(none.output.contains("no application protocol"), "\(none.output)")
        let http1 = try await sClient(base + ["-alpn", "http/1.1"])
        #expect(http1.status != 0)
        #expect(http1.output.contains("no application protocol"), "\(http1.output)")
        // TLS 1.2 too (with an ECDHE AEAD cipher), but not TLS 1.1.
        let tls12 = try await sClient(base + ["-alpn", "h2", "-tls1_2"])
        #expect(tls12.status == 0, "\(tls12.output)")
        #expect(tls12.output.contains("TLSv1.2"), "\(tls12.output)")
        #expect(try await sClient(base + ["-alpn", "h2", "-tls1_1"]).status != 0)
        // A TLS 1.2 client offering only ciphers HTTP/2 forbids (RFC 9113 9.2.2) is refused.
        #expect(try await sClient(base + ["-alpn", "h2", "-tls1_2", "-cipher", "AES128-SHA"]).status != 0)
        #expect(try await harness.client.placeOrder(PlaceOrderRequest(customerId: "a")).orderId == "order_for_a")
        await harness.stop()
    }

    @Test func theClientRefusesAServerThatDoesNotSelectH2() async throws {
        let pki = try TestPKI.get()
        // A free port below the ephemeral range (32768 and up), so that no other test's server,
        // listening on port 0, can take it between the check and openssl's bind.
        var port = 0
        for _ in 0..<100 {
            let candidate = Int.random(in: 20000..<32000)
            guard let (listener, _) = try? Socket.listen(host: "127.0.0.1", port: candidate) else { continue }
            Socket.close(listener)
            port = candidate
            break
        }
        try #require(port != 0)
        // openssl s_server speaks TLS without ALPN.
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        server.arguments = ["s_server", "-accept", "127.0.0.1:\(port)", "-cert", pki.serverCert, "-key", pki.serverKey, "-quiet"]
        server.standardInput = Pipe()
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer {
            // SIGKILL: a child of the test process may inherit a blocked SIGTERM.
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        try await eventually { canConnect(port) }
        let channel = Harness.channel(to: port, tls: try pki.client())
        let error = await #expect(throws: RPCError.self) {
            try await OrderServiceClient(transport: channel).placeOrder(PlaceOrderRequest())
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("did not negotiate h2") == true, "\(String(describing: error))")
        channel.close()
    }

    @Test func badFilesFailAtLoadWithTheReason() throws {
        let pki = try TestPKI.get()
        let missing = #expect(throws: TLSError.self) {
            try ServerTLSConfiguration(certificateChainFile: pki.directory + "/nope.pem", privateKeyFile: pki.serverKey)
        }
        #expect(missing?.message.contains("No such file or directory") == true, "\(String(describing: missing))")
        let mismatched = #expect(throws: TLSError.self) {
            try ServerTLSConfiguration(certificateChainFile: pki.serverCert, privateKeyFile: pki.clientKey)
        }
        #expect(mismatched?.message.contains("does not match") == true, "\(String(describing: mismatched))")
        #expect(mismatched?.message.contains("key values mismatch") == true, "\(String(describing: mismatched))")
        let notPEM = #expect(throws: TLSError.self) {
            try ServerTLSConfiguration(certificateChainFile: pki.directory + "/server.ext", privateKeyFile: pki.serverKey)
        }
        #expect(notPEM?.message.contains("no start line") == true, "\(String(describing: notPEM))")
        let badCA = #expect(throws: TLSError.self) {
            try ClientTLSConfiguration(trustRootsFile: pki.serverKey)
        }
        #expect(badCA?.message.contains("trust roots") == true, "\(String(describing: badCA))")
        #expect(throws: TLSError.self) { try ClientTLSConfiguration(trustRootsFile: pki.caCert, certificateChainFile: pki.clientCert) }
    }
}

/// Runs `openssl` with `arguments` and closed input on a thread of its own; its exit status and
/// output (stdout and stderr). TestSupport's posix_spawn, not Foundation's Process: the latter
/// crashed in `Process.run` once in CI while other tests started processes.
func sClient(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await ChildProcess.offload { try ChildProcess.run(["/usr/bin/openssl"] + arguments) }
}

/// Runs blocking work on a thread of its own, off Swift's cooperative pool (which the servers'
/// handlers and the clients' continuations need).
func blocking<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Foundation.Thread { continuation.resume(returning: work()) }
        thread.start()
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func canConnect(_ port: Int) -> Bool {
    guard let connection = try? RawConnection(port: port) else { return false }
    connection.close()
    return true
}
