// Our codecs against an independent encoder: Tests/fixtures/codec/*.bin were written by Python's
// protobuf (scripts/make-codec-fixtures). Each fixture must decode to the expected value, and our
// encoding of that value must be the same bytes, so Python decodes ours too.
import Foundation
import GRPCProtos
import PlatformProtos
import Testing

private let fixtureDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("fixtures/codec")

private struct MissingFixture: Error { let path: String }

/// Read with stdio: Foundation's `Data(contentsOf:)` leaks its buffer (AddressSanitizer shows it),
/// which would hide a leak of ours in the sanitizer run.
private func fixture(_ name: String) throws -> [UInt8] {
    let path = fixtureDirectory.appendingPathComponent("\(name).bin").path
    guard let file = fopen(path, "rb") else { throw MissingFixture(path: path) }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while case let count = fread(&chunk, 1, chunk.count, file), count > 0 { bytes += chunk[..<count] }
    return bytes
}

/// Decodes the fixture, compares with `expected`, and checks our encoding is byte-identical.
private func check<M: GRPCMessage & Equatable>(_ name: String, _ expected: M) throws {
    let bytes = try fixture(name)
    #expect(try M(serializedBytes: bytes) == expected, "\(name) decodes")
    #expect(expected.serializedBytes() == bytes, "\(name) encodes identically")
}

@Suite struct FixtureTests {
    @Test func placeOrder() throws {
        try check("place_order", PlaceOrderRequest(customerId: "customer_1", items: ["burger", "fries", "cola"], totalPrice: 12.5))
        try check("place_order_defaults", PlaceOrderRequest())
    }

    @Test func nonASCIIEmptyStringsAndNegativeDoubles() throws {
        try check("place_order_unicode", PlaceOrderRequest(
            customerId: "café ✓ 日本", items: ["", "crème brûlée", "🍔"], totalPrice: -0.25, restaurantId: "r-1.b_2"))
    }

    @Test func largeRepeatedField() throws {
        try check("place_order_large", PlaceOrderRequest(
            customerId: "bulk", items: (0..<1000).map { "item-\($0)" }, totalPrice: 1e9 + 0.5))
    }

    @Test func responseWithFiveItems() throws {
        try check("order_status_5_items", GetOrderStatusResponse(
            orderId: "order_42", status: "OUT_FOR_DELIVERY", items: ["a", "b", "c", "d", "e"], totalPrice: 0.1))
    }

    @Test func nestedMessages() throws {
        try check("update_menu", UpdateMenuRequest(restaurantId: "r1", items: [
            MenuItem(itemId: "i1", name: "Burger", price: 9.5, description: "beef, 180 g"),
            MenuItem(itemId: "i2", name: "Fries", price: 0, description: ""),
        ]))
        try check("driver_assignments", GetDriverAssignmentsResponse(assignments: [
            DeliveryAssignment(assignmentId: "assignment_1", orderId: "order_1", status: "ASSIGNED"),
            DeliveryAssignment(assignmentId: "assignment_2", orderId: "order_2", status: "DELIVERED"),
        ]))
    }

    @Test func enums() throws {
        try check("health_not_serving", HealthCheckResponse(status: .notServing))
    }

    @Test func oneofs() throws {
        try check("reflection_list_services", ReflectionV1.ServerReflectionRequest(host: "localhost:50051", messageRequest: .listServices("")))
        try check("reflection_file_by_filename", ReflectionV1.ServerReflectionRequest(messageRequest: .fileByFilename("order_service.proto")))
        try check("reflection_file_containing_extension", ReflectionV1.ServerReflectionRequest(
            messageRequest: .fileContainingExtension(ReflectionV1.ExtensionRequest(containingType: "a.B", extensionNumber: 100))))
        try check("reflection_error", ReflectionV1.ServerReflectionResponse(
            originalRequest: ReflectionV1.ServerReflectionRequest(messageRequest: .fileByFilename("missing.proto")),
            messageResponse: .errorResponse(ReflectionV1.ErrorResponse(errorCode: 5, errorMessage: "file not found: missing.proto"))))
    }

    @Test func repeatedBytes() throws {
        try check("reflection_file_descriptors", ReflectionV1.ServerReflectionResponse(
            validHost: "h",
            originalRequest: ReflectionV1.ServerReflectionRequest(messageRequest: .fileContainingSymbol("order_service.OrderService")),
            messageResponse: .fileDescriptorResponse(ReflectionV1.FileDescriptorResponse(
                fileDescriptorProto: [(0...255).map { UInt8($0) }, [], [0x0A, 0x01, 0x78]]))))
    }

    @Test func v1alphaHasTheSameWireFormat() throws {
        // The two packages differ in names only: v1's bytes decode as v1alpha.
        let decoded = try ReflectionV1Alpha.ServerReflectionRequest(serializedBytes: fixture("reflection_list_services"))
        #expect(decoded == ReflectionV1Alpha.ServerReflectionRequest(host: "localhost:50051", messageRequest: .listServices("")))
    }
}
