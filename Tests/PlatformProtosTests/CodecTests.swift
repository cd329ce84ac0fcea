import PlatformProtos
import Testing

@Suite struct CodecTests {
    @Test func placeOrderRoundTripsThroughProtobufC() throws {
        let request = PlaceOrderRequest(customerId: "c1", items: ["burger", "fries", "cola"], totalPrice: 12.5)
        let bytes = request.serializedBytes()
        #expect(try PlaceOrderRequest(serializedBytes: bytes) == request)
    }

    @Test func encodingMatchesTheProtobufWireFormat() {
        // customer_id = "c" (field 1, LEN), items = ["x"] (field 2), total_price = 2.0 (field 3, I64).
        let bytes = PlaceOrderRequest(customerId: "c", items: ["x"], totalPrice: 2).serializedBytes()
        #expect(bytes == [0x0A, 0x01, 0x63, 0x12, 0x01, 0x78, 0x19, 0, 0, 0, 0, 0, 0, 0, 0x40])
    }

    @Test func defaultValuesEncodeToNothing() throws {
        #expect(PlaceOrderRequest().serializedBytes().isEmpty)
        #expect(try PlaceOrderRequest(serializedBytes: []) == PlaceOrderRequest())
    }

    @Test func nestedRepeatedMessagesRoundTrip() throws {
        let menu = UpdateMenuRequest(restaurantId: "r1", items: [
            MenuItem(itemId: "i1", name: "Burger", price: 9.5, description: "beef"),
            MenuItem(itemId: "i2", name: "Fries", price: 3, description: ""),
        ])
        #expect(try UpdateMenuRequest(serializedBytes: menu.serializedBytes()) == menu)
        let assignments = GetDriverAssignmentsResponse(assignments: [
            DeliveryAssignment(assignmentId: "assignment_1", orderId: "order_1", status: "ASSIGNED"),
        ])
        #expect(try GetDriverAssignmentsResponse(serializedBytes: assignments.serializedBytes()) == assignments)
    }

    @Test func enumsAreOpen() throws {
        let response = HealthCheckResponse(status: .notServing)
        #expect(response.serializedBytes() == [0x08, 0x02])
        #expect(try HealthCheckResponse(serializedBytes: [0x08, 0x07]).status.rawValue == 7)
    }

    @Test func unknownFieldsAreSkipped() throws {
        // Field 9 (varint 1) from a newer peer, then order_id = "o".
        let decoded = try GetOrderStatusRequest(serializedBytes: [0x48, 0x01, 0x0A, 0x01, 0x6F])
        #expect(decoded.orderId == "o")
    }

    @Test func garbageIsADecodingError() {
        #expect(throws: MessageDecodingError.self) {
            try PlaceOrderRequest(serializedBytes: [0x0A, 0x05, 0x61])  // length 5, 1 byte present
        }
        #expect(throws: MessageDecodingError.self) {
            try PlaceOrderRequest(serializedBytes: [0xFF, 0xFF, 0xFF])
        }
    }

    @Test(arguments: [0.0, -0.0, 1.5, -273.15, 0.1, 1e-300, 1.7976931348623157e308, -Double.infinity, Double.infinity])
    func doublesRoundTripExactly(value: Double) throws {
        let decoded = try GetOrderStatusResponse(serializedBytes: GetOrderStatusResponse(totalPrice: value).serializedBytes())
        #expect(decoded.totalPrice.bitPattern == value.bitPattern || (decoded.totalPrice == 0 && value == 0))
    }

    @Test func everyMessageRoundTrips() throws {
        func roundTrip<M: GRPCMessage & Equatable>(_ message: M) throws {
            #expect(try M(serializedBytes: message.serializedBytes()) == message)
            #expect(try M(serializedBytes: M().serializedBytes()) == M())
        }
        try roundTrip(PlaceOrderRequest(customerId: "ü", items: ["", "x"], totalPrice: 0.5, restaurantId: "r"))
        try roundTrip(PlaceOrderResponse(orderId: "order_1", status: "PLACED"))
        try roundTrip(GetOrderStatusRequest(orderId: "o"))
        try roundTrip(GetOrderStatusResponse(orderId: "o", status: "DELIVERED", items: Array(repeating: "é", count: 500), totalPrice: -1))
        try roundTrip(CancelOrderRequest(orderId: "o"))
        try roundTrip(CancelOrderResponse(orderId: "o", status: "CANCELED"))
        try roundTrip(RecordRestaurantDecisionRequest(orderId: "o", restaurantId: "r", decision: "ACCEPTED"))
        try roundTrip(RecordRestaurantDecisionResponse(orderId: "o", status: "ACCEPTED"))
        try roundTrip(UpdateMenuRequest(restaurantId: "r", items: (0..<300).map { MenuItem(itemId: "i\($0)", name: "n", price: Double($0) / 3) }))
        try roundTrip(UpdateMenuResponse(status: "SUCCESS"))
        try roundTrip(AcceptOrderRequest(restaurantId: "r", orderId: "o"))
        try roundTrip(AcceptOrderResponse(orderId: "o", status: "ACCEPTED"))
        try roundTrip(RejectOrderRequest(restaurantId: "r", orderId: "o"))
        try roundTrip(RejectOrderResponse(orderId: "o", status: "REJECTED"))
        try roundTrip(GetMenuRequest(restaurantId: "r"))
        try roundTrip(GetMenuResponse(restaurantId: "r", items: [MenuItem(itemId: "i", name: "日本", price: 0, description: "d")]))
        try roundTrip(AssignDriverRequest(orderId: "o", driverId: "d"))
        try roundTrip(AssignDriverResponse(assignmentId: "assignment_1", status: "ASSIGNED"))
        try roundTrip(UpdateDeliveryStatusRequest(orderId: "o", status: "PICKED_UP"))
        try roundTrip(UpdateDeliveryStatusResponse(orderId: "o", status: "PICKED_UP"))
        try roundTrip(GetDriverAssignmentsRequest(driverId: "d"))
        try roundTrip(GetDriverAssignmentsResponse(assignments: [DeliveryAssignment(assignmentId: "a", orderId: "o", status: "s")]))
        try roundTrip(DeliveryAssignment(assignmentId: "a", orderId: "o", status: "s"))
        try roundTrip(HealthCheckRequest(service: "order_service.OrderService"))
        try roundTrip(HealthCheckResponse(status: .serving))
    }

    @Test func truncationsOfAValidMessageNeverCrash() throws {
        let bytes = UpdateMenuRequest(restaurantId: "r1", items: [MenuItem(itemId: "i1", name: "Burger", price: 9.5, description: "d")])
            .serializedBytes()
        for length in 0..<bytes.count {
            // A cut may land on a field boundary (a valid shorter message) or inside one (an error).
            _ = try? UpdateMenuRequest(serializedBytes: Array(bytes[..<length]))
        }
        #expect(throws: MessageDecodingError.self) { try UpdateMenuRequest(serializedBytes: Array(bytes.dropLast())) }
    }

    @Test func randomInputNeverCrashes() {
        var generator = SplitMix64(seed: 0x5EED)
        var decoded = 0
        for _ in 0..<20_000 {
            let length = Int(generator.next() % 64)
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            if (try? UpdateMenuRequest(serializedBytes: bytes)) != nil { decoded += 1 }
            _ = try? GetDriverAssignmentsResponse(serializedBytes: bytes)
            _ = try? PlaceOrderRequest(serializedBytes: bytes)
        }
        #expect(decoded < 20_000)  // most random inputs are rejected, none crashed the process
    }

    @Test func methodPathsFollowTheGRPCConvention() {
        #expect(OrderServiceMethods.placeOrder.path == "/order_service.OrderService/PlaceOrder")
        #expect(RestaurantServiceMethods.acceptOrder.path == "/restaurant_service.RestaurantService/AcceptOrder")
        #expect(DeliveryServiceMethods.getDriverAssignments.path == "/delivery_service.DeliveryService/GetDriverAssignments")
        #expect(HealthMethods.check.path == "/grpc.health.v1.Health/Check")
    }
}

/// A small deterministic generator, so a failing random input can be reproduced.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
