// swift-tools-version: 6.0
//
// The benchmark and interoperability tools of the food-ordering platform, apart from the product
// (as grpc-swift and swift-nio keep theirs): they build on the platform's layers through the
// root package's library products and are never shipped.
//   BenchProtos          generated codecs of Benchmarks/Protos: stream_bench.StreamBench (the C++
//                        peer's yardstick) and interop.streams.StreamTest (the streaming interop tests)
//   InMemoryOrders       OrderService from memory: the gRPC layer measured without Redis
//   grpc-bench-server    InMemoryOrders plus StreamBench, health and reflection, for h2load against the peers
//   grpc-bench-client    request bodies for h2load, our own client's latency and throughput
//   grpc-interop-server  what the grpcio interoperability tests (Tests/interop) talk to: InMemoryOrders,
//                        StreamTest, health and reflection
//   codec-bench, platform-bench, redis-bench   codecs, the running platform, the Redis client
//   watch-bench          WatchOrder fan-out: memory per watcher, change-to-update latency
//   auth-bench           CPU per call of the access policy
//   telemetry-bench      CPU per call of metrics, tracing and the call log
import PackageDescription

let package = Package(
    name: "food-platform-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "food-platform", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // protoc-c output is plain C that includes <protobuf-c/protobuf-c.h> itself, so the link is explicit.
        .target(name: "CBenchProtos", linkerSettings: [.linkedLibrary("protobuf-c")]),
        .target(name: "BenchProtos", dependencies: [
            "CBenchProtos", .product(name: "ProtobufRuntime", package: "food-platform"),
            .product(name: "RPCCore", package: "food-platform"),
        ]),
        .target(name: "InMemoryOrders", dependencies: [.product(name: "PlatformProtos", package: "food-platform")]),
        .executableTarget(name: "grpc-bench-server", dependencies: [
            "BenchProtos", "InMemoryOrders", .product(name: "GRPCHTTP2", package: "food-platform"),
            .product(name: "GRPCServices", package: "food-platform"), .product(name: "PlatformProtos", package: "food-platform"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "grpc-bench-client", dependencies: [
            "BenchProtos", .product(name: "GRPCHTTP2", package: "food-platform"),
            .product(name: "PlatformProtos", package: "food-platform"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "grpc-interop-server", dependencies: [
            "BenchProtos", "InMemoryOrders", .product(name: "GRPCHTTP2", package: "food-platform"),
            .product(name: "GRPCServices", package: "food-platform"), .product(name: "PlatformProtos", package: "food-platform"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "codec-bench", dependencies: [.product(name: "PlatformProtos", package: "food-platform")]),
        .executableTarget(name: "platform-bench", dependencies: [
            .product(name: "GRPCHTTP2", package: "food-platform"), .product(name: "PlatformProtos", package: "food-platform"),
            .product(name: "RedisClient", package: "food-platform"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "redis-bench", dependencies: [.product(name: "RedisClient", package: "food-platform")]),
        .executableTarget(name: "telemetry-bench", dependencies: [
            .product(name: "EventLoop", package: "food-platform"), .product(name: "GRPCHTTP2", package: "food-platform"),
            .product(name: "RedisClient", package: "food-platform"), .product(name: "RPCCore", package: "food-platform"),
            .product(name: "Telemetry", package: "food-platform"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "watch-bench", dependencies: [
            .product(name: "EventLoop", package: "food-platform"), .product(name: "GRPCHTTP2", package: "food-platform"),
            .product(name: "PlatformProtos", package: "food-platform"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "auth-bench", dependencies: [
            .product(name: "CallerTokens", package: "food-platform"), .product(name: "PlatformAuth", package: "food-platform"),
            .product(name: "PlatformProtos", package: "food-platform"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
