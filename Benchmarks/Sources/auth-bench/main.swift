// auth-bench: what authentication and authorization cost per call, in CPU time, measured on the
// access policy itself (the interceptor every RPC passes through): a cached token on PlaceOrder
// (the customer-owns-the-request rule) and on GetMenu (any caller), next to a first-time
// verification (Ed25519 signature check and claims parsing) for reference.
//
// usage: auth-bench --key signing.key --public signing.pub [--count 1000000]
import ArgumentParser
import CallerTokens
import FoundationEssentials
import Logging
import PlatformAuth
import PlatformProtos
#if canImport(Glibc)
import Glibc
#endif

@main
struct AuthBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "auth-bench", abstract: "CPU per call of the access policy.")

    @Option(help: "Ed25519 private key (PEM) to mint tokens with.") var key: String
    @Option(help: "The matching public key (PEM).") var `public`: String
    @Option(help: "Calls per measurement.") var count = 1_000_000

    func run() async throws {
        let signer = TokenSigner(key: try Ed25519PrivateKey(pemFile: key))
        let keys = try Ed25519PublicKeys(pemFile: `public`)
        let now = Date().timeIntervalSince1970
        let token = signer.token(subject: "c1", role: "customer", lifetime: 3600, now: now)
        let policy = AccessPolicy(tokens: TokenCache(verifier: TokenVerifier(keys: keys)), parties: nil,
                                  logger: Logger(label: "auth-bench") { _ in SwiftLogNoOpLogHandler() })
        var metadata = Metadata()
        metadata.add("authorization", "Bearer \(token)")
        let place = PlaceOrderRequest(customerId: "c1", items: ["tea"], totalPrice: 2)
        let menu = GetMenuRequest(restaurantId: "r1")

        for (name, path, request) in [
            ("PlaceOrder, cached token", OrderServiceMethods.placeOrder.path, place as any GRPCMessage),
            ("GetMenu, cached token", RestaurantServiceMethods.getMenu.path, menu as any GRPCMessage),
        ] {
            let start = cpuNanoseconds()
            for _ in 0..<count {
                // A context per call, as the server makes one.
                let context = ServerContext(path: path, requestMetadata: metadata, deadline: nil)
                try await policy.intercept(request, context: context)
            }
            report(name, cpuNanoseconds() - start, count)
        }
        let contextOnly = cpuNanoseconds()
        for _ in 0..<count { _ = ServerContext(path: OrderServiceMethods.placeOrder.path, requestMetadata: metadata, deadline: nil) }
        report("the context alone (the server makes it anyway)", cpuNanoseconds() - contextOnly, count)

        let verifier = TokenVerifier(keys: keys)
        let fresh = count / 100
        let verifyStart = cpuNanoseconds()
        for _ in 0..<fresh { _ = try verifier.verify(token, now: now) }
        report("first-time verification (no cache)", cpuNanoseconds() - verifyStart, fresh)
    }

    func report(_ name: String, _ nanoseconds: UInt64, _ calls: Int) {
        let perCall = Double(nanoseconds) / Double(calls)
        print("\(name): \(Int(perCall.rounded())) ns CPU per call (\(calls) calls)")
    }
}

/// CPU time of this process so far.
func cpuNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
