// codec-bench: the cost of our protobuf-c codecs per operation, for the messages on the hot path
// (PlaceOrderRequest and GetOrderStatusResponse, 5 items each). Build in release:
//   swift build -c release --product codec-bench && .build/release/codec-bench [iterations]
import PlatformProtos
#if canImport(Glibc)
import Glibc
#endif

let iterations = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 1_000_000
let items = ["burger", "fries", "cola", "salad", "ice cream"]

/// Runs `body` `iterations` times (after a warm-up) and prints nanoseconds per call.
func measure(_ name: String, _ body: () throws -> Int) rethrows {
    var sink = 0
    for _ in 0..<(iterations / 10) { sink &+= try body() }
    let clock = ContinuousClock()
    let start = clock.now
    for _ in 0..<iterations { sink &+= try body() }
    let elapsed = clock.now - start
    let nanoseconds = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
    print("\(name): \(Int((nanoseconds / Double(iterations)).rounded())) ns/op (\(iterations) ops, checksum \(sink % 10))")
}

let place = PlaceOrderRequest(customerId: "customer_1", items: items, totalPrice: 12.5, restaurantId: "r1")
let status = GetOrderStatusResponse(orderId: "order_12345", status: "OUT_FOR_DELIVERY", items: items, totalPrice: 31.75)
let placeBytes = place.serializedBytes()
let statusBytes = status.serializedBytes()
print("PlaceOrderRequest \(placeBytes.count) bytes, GetOrderStatusResponse \(statusBytes.count) bytes")
measure("PlaceOrderRequest encode") { place.serializedBytes().count }
try measure("PlaceOrderRequest decode") { try PlaceOrderRequest(serializedBytes: placeBytes).items.count }
measure("GetOrderStatusResponse encode") { status.serializedBytes().count }
try measure("GetOrderStatusResponse decode") { try GetOrderStatusResponse(serializedBytes: statusBytes).items.count }
