import GRPCProtos
import PlatformProtos
import Testing
import TestSupport

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
        try roundTrip(WatchOrderRequest(orderId: "o"))
        try roundTrip(OrderUpdate(orderId: "o", status: "DELIVERED", driverId: "d", updatedAtUnixMs: 1_700_000_000_123,
                                  restaurantId: "r", customerId: "c", final: true))
        try roundTrip(WatchRestaurantOrdersRequest(restaurantId: "r"))
        try roundTrip(RestaurantOrderUpdate(orderId: "o", status: "PLACED", customerId: "c", items: ["a", "b"], totalPrice: 3.5,
                                            driverId: "", updatedAtUnixMs: -1))
        try roundTrip(WatchDriverAssignmentsRequest(driverId: "d"))
        try roundTrip(DriverAssignmentUpdate(assignmentId: "a", orderId: "o", status: "PICKED_UP", updatedAtUnixMs: Int64.max))
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
        #expect(HealthMethods.watch.path == "/grpc.health.v1.Health/Watch")
        #expect(ReflectionV1.ServerReflectionMethods.serverReflectionInfo.path
            == "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        #expect(ReflectionV1Alpha.ServerReflectionMethods.serverReflectionInfo.path
            == "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    }

    @Test func methodKindsFollowTheProtos() {
        #expect(OrderServiceMethods.placeOrder.kind == .unary)
        #expect(OrderServiceMethods.watchOrder.kind == .serverStreaming)
        #expect(RestaurantServiceMethods.watchRestaurantOrders.kind == .serverStreaming)
        #expect(DeliveryServiceMethods.watchDriverAssignments.kind == .serverStreaming)
        #expect(HealthMethods.check.kind == .unary)
        #expect(HealthMethods.watch.kind == .serverStreaming)
        #expect(ReflectionV1.ServerReflectionMethods.serverReflectionInfo.kind == .bidirectionalStreaming)
        #expect(ReflectionV1Alpha.ServerReflectionMethods.serverReflectionInfo.kind == .bidirectionalStreaming)
    }
}

@Suite struct BytesAndOneofTests {
    @Test func repeatedBytesRoundTrip() throws {
        let every = (0...255).map { UInt8($0) }
        let big = [UInt8](repeating: 0xAB, count: 70_000)  // larger than one arena block
        let response = ReflectionV1.FileDescriptorResponse(fileDescriptorProto: [every, [], [0], big, [0x0A, 0x01, 0x78]])
        let decoded = try ReflectionV1.FileDescriptorResponse(serializedBytes: response.serializedBytes())
        #expect(decoded == response)
        #expect(decoded.fileDescriptorProto.map(\.count) == [256, 0, 1, 70_000, 3])
        #expect(try ReflectionV1.FileDescriptorResponse(serializedBytes: []).fileDescriptorProto.isEmpty)
    }

    @Test func bytesEncodeAsLengthDelimited() {
        // Field 1 (LEN) per element, an empty element included.
        let bytes = ReflectionV1Alpha.FileDescriptorResponse(fileDescriptorProto: [[1, 2, 3], []]).serializedBytes()
        #expect(bytes == [0x0A, 0x03, 1, 2, 3, 0x0A, 0x00])
    }

    @Test(arguments: [
        ReflectionV1.ServerReflectionRequest.MessageRequest.fileByFilename("order_service.proto"),
        .fileByFilename(""),
        .fileContainingSymbol("order_service.OrderService.PlaceOrder"),
        .fileContainingExtension(ReflectionV1.ExtensionRequest(containingType: "a.B", extensionNumber: 100)),
        .fileContainingExtension(ReflectionV1.ExtensionRequest()),
        .allExtensionNumbersOfType("a.B"),
        .listServices(""),
        .listServices("*"),
    ])
    func everyRequestCaseRoundTrips(request: ReflectionV1.ServerReflectionRequest.MessageRequest) throws {
        let message = ReflectionV1.ServerReflectionRequest(host: "localhost", messageRequest: request)
        let decoded = try ReflectionV1.ServerReflectionRequest(serializedBytes: message.serializedBytes())
        #expect(decoded == message)
        #expect(decoded.messageRequest == request)
    }

    @Test func v1alphaRequestCasesRoundTrip() throws {
        let cases: [ReflectionV1Alpha.ServerReflectionRequest.MessageRequest?] = [
            nil, .fileByFilename("f.proto"), .fileContainingSymbol("p.S"),
            .fileContainingExtension(ReflectionV1Alpha.ExtensionRequest(containingType: "p.M", extensionNumber: -7)),
            .allExtensionNumbersOfType("p.M"), .listServices(""),
        ]
        for request in cases {
            let message = ReflectionV1Alpha.ServerReflectionRequest(host: "h", messageRequest: request)
            #expect(try ReflectionV1Alpha.ServerReflectionRequest(serializedBytes: message.serializedBytes()) == message)
        }
    }

    @Test func aOneofSetToItsDefaultIsStillSent() throws {
        // list_services = "" is field 7 with length 0: the server must see which request it is.
        #expect(ReflectionV1.ServerReflectionRequest(messageRequest: .listServices("")).serializedBytes() == [0x3A, 0x00])
        #expect(try ReflectionV1.ServerReflectionRequest(serializedBytes: [0x3A, 0x00]).messageRequest == .listServices(""))
        #expect(ReflectionV1.ServerReflectionRequest().serializedBytes().isEmpty)
        #expect(try ReflectionV1.ServerReflectionRequest(serializedBytes: []).messageRequest == nil)
    }

    @Test func theLastOneofMemberOnTheWireWins() throws {
        // file_by_filename = "a" then list_services = "b": proto3 keeps the last one.
        let decoded = try ReflectionV1.ServerReflectionRequest(serializedBytes: [0x1A, 0x01, 0x61, 0x3A, 0x01, 0x62])
        #expect(decoded.messageRequest == .listServices("b"))
    }

    @Test func everyResponseCaseRoundTrips() throws {
        let original = ReflectionV1.ServerReflectionRequest(host: "h", messageRequest: .listServices(""))
        let cases: [ReflectionV1.ServerReflectionResponse.MessageResponse?] = [
            nil,
            .fileDescriptorResponse(ReflectionV1.FileDescriptorResponse(fileDescriptorProto: [[0x0A, 0x01, 0x61], []])),
            .allExtensionNumbersResponse(ReflectionV1.ExtensionNumberResponse(baseTypeName: "p.M", extensionNumber: [1, 100, -1])),
            .listServicesResponse(ReflectionV1.ListServiceResponse(service: [
                ReflectionV1.ServiceResponse(name: "order_service.OrderService"), ReflectionV1.ServiceResponse(name: "grpc.health.v1.Health"),
            ])),
            .errorResponse(ReflectionV1.ErrorResponse(errorCode: 5, errorMessage: "not found")),
            .errorResponse(ReflectionV1.ErrorResponse()),
        ]
        for response in cases {
            let message = ReflectionV1.ServerReflectionResponse(validHost: "h", originalRequest: original, messageResponse: response)
            let decoded = try ReflectionV1.ServerReflectionResponse(serializedBytes: message.serializedBytes())
            #expect(decoded == message)
            #expect(decoded.messageResponse == response)
        }
    }

    @Test func randomInputNeverCrashesTheOneofDecoder() {
        var generator = SplitMix64(seed: 0x0E0F)
        for _ in 0..<20_000 {
            let length = Int(generator.next() % 48)
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            _ = try? ReflectionV1.ServerReflectionRequest(serializedBytes: bytes)
            _ = try? ReflectionV1Alpha.ServerReflectionResponse(serializedBytes: bytes)
        }
    }
}

@Suite struct DescriptorTests {
    /// A FileDescriptorProto starts with field 1 (name, LEN): 0x0A, the length, the name.
    private func checkStartsWithName(_ file: ProtoFileDescriptor) {
        let name = Array(file.name.utf8)
        #expect(name.count < 128, "one-byte length")
        #expect(file.serialized.count > name.count + 2)
        #expect(Array(file.serialized.prefix(2)) == [0x0A, UInt8(name.count)], "\(file.name)")
        #expect(Array(file.serialized.dropFirst(2).prefix(name.count)) == name, "\(file.name)")
    }

    @Test func platformDescriptorsStartWithTheirNames() {
        #expect(PlatformProtosDescriptors.all.map(\.name) == ["order_service.proto", "restaurant_service.proto", "delivery_service.proto"])
        for file in PlatformProtosDescriptors.all { checkStartsWithName(file) }
    }

    @Test func grpcDescriptorsStartWithTheirNames() {
        #expect(GRPCProtosDescriptors.all.map(\.name)
            == ["grpc/health/v1/health.proto", "grpc/reflection/v1/reflection.proto", "grpc/reflection/v1alpha/reflection.proto"])
        for file in GRPCProtosDescriptors.all { checkStartsWithName(file) }
    }

    @Test func symbolsAndServices() {
        let order = PlatformProtosDescriptors.orderService
        #expect(order.services == ["order_service.OrderService"])
        #expect(order.dependencies.isEmpty)
        for symbol in ["order_service.OrderService", "order_service.OrderService.PlaceOrder", "order_service.OrderService.WatchOrder",
                       "order_service.PlaceOrderRequest", "order_service.OrderUpdate"] {
            #expect(order.symbols.contains(symbol), "\(symbol)")
        }
        #expect(GRPCProtosDescriptors.health.symbols.contains("grpc.health.v1.HealthCheckResponse.ServingStatus"))
        #expect(GRPCProtosDescriptors.reflectionV1alpha.services == ["grpc.reflection.v1alpha.ServerReflection"])
        // No symbol is defined by two files of one module.
        for all in [PlatformProtosDescriptors.all, GRPCProtosDescriptors.all] {
            let symbols = all.flatMap(\.symbols)
            #expect(Set(symbols).count == symbols.count)
        }
    }

    @Test func descriptorsCarryNoSourceInfo() {
        // Field 9 (source_code_info, LEN) would be tag 0x4A at the top level; protoc's comments
        // are in the generated Swift, not in what reflection serves. The comment text would show.
        for file in PlatformProtosDescriptors.all + GRPCProtosDescriptors.all {
            let text = String(decoding: file.serialized, as: UTF8.self)
            #expect(!text.contains("Field numbers are a wire contract"))
            #expect(!text.contains("Optional: when set"))
            #expect(!text.contains("exactly one of message_request"))
        }
    }
}

