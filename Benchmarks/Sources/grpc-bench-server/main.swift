// grpc-bench-server: order_service.OrderService from memory on our gRPC layer, with exactly the
// semantics of the reference peers, so h2load loads ours and theirs with identical request bodies.
import ArgumentParser
import GRPCHTTP2
import Logging
import PlatformProtos
import InMemoryOrders

@main
struct BenchServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc-bench-server",
        abstract: "OrderService from memory on our gRPC layer, for transport benchmarks.")

    @Option(help: "Port to listen on.") var port = 60051
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Event loop threads (default: one per core).") var loops: Int?

    func run() async throws {
        var configuration = ServerConfiguration(host: host, port: port)
        if let loops { configuration.loopCount = loops }
        var logger = Logger(label: "grpc-bench-server")
        logger.logLevel = .info
        let server = GRPCServer(configuration: configuration, services: [MemoryOrderService().service], logger: logger)
        try server.start()
        await server.runUntilTerminated()
    }
}
