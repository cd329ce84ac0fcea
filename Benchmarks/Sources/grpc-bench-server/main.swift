// grpc-bench-server: order_service.OrderService from memory on our gRPC layer, with exactly the
// semantics of the reference peers, so h2load loads ours and theirs with identical request bodies;
// plus stream_bench.StreamBench/Stream (the C++ peer's streaming yardstick), grpc.health.v1 and
// server reflection.
import ArgumentParser
import BenchProtos
import GRPCHTTP2
import GRPCServices
import InMemoryOrders
import Logging
import PlatformProtos

/// `stream_bench.StreamBench`, with the C++ peer's semantics: `count` replies of `payload_bytes`
/// bytes numbered from 0, then OK; INVALID_ARGUMENT outside count 0-100000, payload_bytes 0-65536.
struct StreamBenchService: StreamBenchProvider {
    static let maxCount: Int32 = 100_000
    static let maxPayloadBytes: Int32 = 65_536

    func stream(_ request: StreamRequest, responses: RPCWriter<StreamReply>, context: ServerContext) async throws {
        guard (0...Self.maxCount).contains(request.count), (0...Self.maxPayloadBytes).contains(request.payloadBytes) else {
            throw RPCError(.invalidArgument, "count 0-\(Self.maxCount), payload_bytes 0-\(Self.maxPayloadBytes)")
        }
        // The payload is built once; the loop only numbers the replies. `write` suspends only
        // while the client's window and the stream's buffer are full, so a client that keeps up
        // is answered without leaving the event loop's thread.
        var reply = StreamReply(payload: [UInt8](repeating: UInt8(ascii: "x"), count: Int(request.payloadBytes)))
        for sequence in 0..<request.count {
            reply.sequence = sequence
            try await responses.write(reply)
        }
    }
}

@main
struct BenchServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc-bench-server",
        abstract: "OrderService from memory and StreamBench on our gRPC layer, for transport benchmarks.")

    @Option(help: "Port to listen on.") var port = 60051
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Event loop threads (default: one per core).") var loops: Int?
    @Option(help: "PEM certificate chain: serve TLS (h2 by ALPN) instead of h2c; needs --tls-key.") var tlsCert: String?
    @Option(help: "PEM private key of --tls-cert.") var tlsKey: String?

    func run() async throws {
        var configuration = ServerConfiguration(host: host, port: port)
        if let loops { configuration.loopCount = loops }
        switch (tlsCert, tlsKey) {
        case (let cert?, let key?): configuration.tls = try ServerTLSConfiguration(certificateChainFile: cert, privateKeyFile: key)
        case (nil, nil): break
        default: throw ValidationError("--tls-cert and --tls-key go together")
        }
        var logger = Logger(label: "grpc-bench-server")
        logger.logLevel = .info
        let services = [MemoryOrderService().service, StreamBenchService().service]
        let health = HealthService(services: services.map(\.name))
        let reflection = ReflectionService(files: PlatformProtosDescriptors.all + BenchProtosDescriptors.all,
                                           served: services.map(\.name))
        let server = GRPCServer(configuration: configuration, services: services + [health.service] + reflection.services,
                                logger: logger)
        try server.start()
        await server.runUntilTerminated(beforeShutdown: { health.enterShutdown() })
    }
}
