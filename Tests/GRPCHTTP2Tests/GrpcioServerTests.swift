// Our client against a real gRPC implementation: Python grpcio's server
// (Tests/interop/grpcio_server.py, from the README's test set-up in .venv).
import Foundation
import GRPCHTTP2
import PlatformProtos
import Testing
import TestSupport

/// A running grpcio server process and a channel to it.
final class GrpcioServer {
    let pid: pid_t
    let port: Int
    let channel: GRPCChannel
    var client: OrderServiceClient { OrderServiceClient(transport: channel) }

    init() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let python = root.appendingPathComponent(".venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw ChildProcess.SpawnError(description: "\(python) missing: run scripts/install-deps")
        }
        let (pid, output) = try ChildProcess.spawn(
            [python, root.appendingPathComponent("Tests/interop/grpcio_server.py").path], captureOutput: true)
        self.pid = pid
        defer { close(output!) }
        guard let line = ChildProcess.readLine(output!), line.hasPrefix("listening on "),
              let port = Int(line.dropFirst("listening on ".count)) else {
            ChildProcess.stop(pid, signal: SIGKILL)
            throw ChildProcess.SpawnError(description: "grpcio_server.py did not report its port")
        }
        self.port = port
        channel = GRPCChannel(host: "127.0.0.1", port: port)
    }

    func stop() {
        channel.close()
        ChildProcess.stop(pid)
    }
}

@Suite(.serialized) struct GrpcioServerTests {
    @Test func unaryCallWithMetadataRoundTrip() async throws {
        let server = try GrpcioServer()
        defer { server.stop() }
        var metadata = Metadata()
        metadata.add("x-echo-token", "abc 123")
        let response = try await server.channel.callWithMetadata(
            OrderServiceMethods.placeOrder, PlaceOrderRequest(customerId: "c", items: ["x"], totalPrice: 2),
            options: CallOptions(metadata: metadata))
        #expect(response.message == PlaceOrderResponse(orderId: "py_1", status: "PLACED"))
        #expect(response.headers["x-echo-token"] == "abc 123")
        #expect(response.trailers["x-echo-token"] == "abc 123")
        let status = try await server.client.getOrderStatus(GetOrderStatusRequest(orderId: "o7"))
        #expect(status == GetOrderStatusResponse(orderId: "o7", status: "PLACED", items: ["a", "b"], totalPrice: 1.5))
    }

    @Test func everyStatusCodeArrivesWithItsMessage() async throws {
        let server = try GrpcioServer()
        defer { server.stop() }
        for code in StatusCode.allCases where code != .ok {
            await #expect(throws: RPCError(code, "failure \(code.rawValue) ✓")) {
                try await server.client.getOrderStatus(GetOrderStatusRequest(orderId: "code:\(code.rawValue)"))
            }
        }
    }

    @Test func unimplementedMethodAndDeadline() async throws {
        let server = try GrpcioServer()
        defer { server.stop() }
        let unimplemented = await #expect(throws: RPCError.self) {
            try await server.client.cancelOrder(CancelOrderRequest(orderId: "o"))
        }
        #expect(unimplemented?.code == .unimplemented)
        let started = ContinuousClock.now
        let late = await #expect(throws: RPCError.self) {
            try await server.client.getOrderStatus(GetOrderStatusRequest(orderId: "sleep"), options: CallOptions(timeout: .milliseconds(200)))
        }
        #expect(late?.code == .deadlineExceeded)
        #expect(ContinuousClock.now - started < .seconds(2))
    }

    @Test func serverGoneIsUnavailable() async throws {
        // The gone server's port is held (bound, not listening) so that no server of a test
        // running alongside, bound to port 0, can be handed it and answer instead (one once
        // answered UNIMPLEMENTED). Should one take it in the moment before, try again.
        for _ in 0..<5 {
            let server = try GrpcioServer()
            defer { server.channel.close() }
            _ = try await server.client.getOrderStatus(GetOrderStatusRequest(orderId: "before"))
            ChildProcess.stop(server.pid)
            guard let held = RedisServer.holdPort(server.port) else { continue }
            defer { close(held) }
            let error = await #expect(throws: RPCError.self) {
                try await server.client.getOrderStatus(GetOrderStatusRequest(orderId: "after"))
            }
            #expect(error?.code == .unavailable)
            return
        }
        Issue.record("the gone server's port was taken by another test each time")
    }
}
