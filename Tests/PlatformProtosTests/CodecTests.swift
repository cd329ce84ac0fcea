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

    @Test func methodPathsFollowTheGRPCConvention() {
        #expect(OrderServiceMethods.placeOrder.path == "/order_service.OrderService/PlaceOrder")
        #expect(RestaurantServiceMethods.acceptOrder.path == "/restaurant_service.RestaurantService/AcceptOrder")
        #expect(DeliveryServiceMethods.getDriverAssignments.path == "/delivery_service.DeliveryService/GetDriverAssignments")
        #expect(HealthMethods.check.path == "/grpc.health.v1.Health/Check")
    }
}
