// swift-tools-version: 6.0
//
// The food-ordering platform: three gRPC services on our own HTTP/2 gRPC layer (libnghttp2),
// protobuf-c message codecs and a Redis module (hiredis). Modules, bottom to top:
//   C shims (CNGHTTP2, CProtobufC, CHiredis, CSystem) and protoc-c output (CPlatformProtos)
//   RPCCore          transport-agnostic gRPC types: status, metadata, methods, streams, routes
//   ProtobufRuntime  the bridge from Swift values to protobuf-c structs the generated codecs use
//   GRPCProtos       generated codecs of gRPC's own protos (health, reflection)
//   GRPCServices     grpc.health.v1 and server reflection, for any set of services
//   PlatformProtos   generated Swift messages, method tables, providers, clients and descriptors
//   EventLoop        epoll loop thread, sockets, timers: the only place that polls
//   GRPCHTTP2        gRPC server and client over HTTP/2 on libnghttp2 (no protos of its own)
//   RedisClient      commands, transactions, scripts and Pub/Sub on hiredis
//   TraceContext     the W3C trace context, as calls, events and logs carry it
//   Telemetry        metrics (swift-metrics on swift-prometheus, /metrics), tracing, log format
//   *Logic           one library per service; the executables are thin mains
//   test-client      the platform from a user's side: tour, one command per RPC, health, bench
// The benchmark and interoperability tools are a package of their own, in Benchmarks/.
import PackageDescription

let package = Package(
    name: "food-platform",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "order-service", targets: ["order-service"]),
        .executable(name: "restaurant-service", targets: ["restaurant-service"]),
        .executable(name: "delivery-service", targets: ["delivery-service"]),
        .executable(name: "test-client", targets: ["test-client"]),
        // The layers other packages build on (Benchmarks/ among them).
        .library(name: "RPCCore", targets: ["RPCCore"]),
        .library(name: "ProtobufRuntime", targets: ["ProtobufRuntime"]),
        .library(name: "GRPCProtos", targets: ["GRPCProtos"]),
        .library(name: "GRPCServices", targets: ["GRPCServices"]),
        .library(name: "EventLoop", targets: ["EventLoop"]),
        .library(name: "GRPCHTTP2", targets: ["GRPCHTTP2"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
        .library(name: "PlatformProtos", targets: ["PlatformProtos"]),
        .library(name: "CallerTokens", targets: ["CallerTokens"]),
        .library(name: "PlatformAuth", targets: ["PlatformAuth"]),
        .library(name: "Telemetry", targets: ["Telemetry"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
    ],
    targets: [
        .systemLibrary(name: "CNGHTTP2", providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(name: "CProtobufC", providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CSystem"),
        .systemLibrary(name: "COpenSSL", providers: [.apt(["libssl-dev"])]),
        // protoc-c output is plain C that includes <protobuf-c/protobuf-c.h> itself, so the link is explicit.
        .target(name: "CPlatformProtos", dependencies: ["CProtobufC"], linkerSettings: [.linkedLibrary("protobuf-c")]),
        .target(name: "CGRPCProtos", dependencies: ["CProtobufC"], linkerSettings: [.linkedLibrary("protobuf-c")]),
        .target(name: "RPCCore"),
        .target(name: "ProtobufRuntime", dependencies: ["CProtobufC", "RPCCore"]),
        .target(name: "GRPCProtos", dependencies: ["CGRPCProtos", "ProtobufRuntime", "RPCCore"]),
        .target(name: "GRPCServices", dependencies: ["GRPCProtos", "RPCCore"]),
        .target(name: "PlatformProtos", dependencies: ["CPlatformProtos", "ProtobufRuntime", "RPCCore"]),
        .target(name: "EventLoop", dependencies: ["CSystem"]),
        .target(name: "GRPCHTTP2", dependencies: [
            "CNGHTTP2", "COpenSSL", "EventLoop", "RPCCore", .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "GRPCHTTP2Tests", dependencies: ["GRPCHTTP2", "GRPCServices", "PlatformProtos", "TestSupport"]),
        .testTarget(name: "EventLoopTests", dependencies: ["EventLoop"]),
        .target(name: "RedisClient", dependencies: ["CHiredis", "EventLoop"]),
        .target(name: "TraceContext", dependencies: [.product(name: "Instrumentation", package: "swift-distributed-tracing")]),
        .target(name: "Telemetry", dependencies: [
            "EventLoop", "GRPCHTTP2", "RedisClient", "RPCCore", "TraceContext",
            .product(name: "CoreMetrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Tracing", package: "swift-distributed-tracing"), .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "TelemetryTests", dependencies: [
            "EventLoop", "GRPCHTTP2", "GRPCProtos", "GRPCServices", "RedisClient", "RPCCore", "Telemetry", "TestSupport", "TraceContext",
            .product(name: "Logging", package: "swift-log"), .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Tracing", package: "swift-distributed-tracing"),
        ]),
        .target(name: "TestSupport", dependencies: [], path: "Tests/TestSupport"),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "TestSupport"]),
        .target(name: "PlatformCommon", dependencies: [
            "RPCCore", "RedisClient", "TraceContext", .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ], exclude: ["Lua"]),
        .target(name: "CallerTokens", dependencies: ["COpenSSL", "RPCCore"]),
        .target(name: "PlatformAuth", dependencies: [
            "CallerTokens", "PlatformCommon", "PlatformProtos", "RPCCore", .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "OrderLogic", dependencies: ["PlatformAuth", "PlatformCommon", "PlatformProtos", "TraceContext"], exclude: ["Lua"]),
        .target(name: "RestaurantLogic", dependencies: ["PlatformAuth", "PlatformCommon", "PlatformProtos"], exclude: ["Lua"]),
        .target(name: "DeliveryLogic", dependencies: [
            "PlatformAuth", "PlatformCommon", "PlatformProtos", "TraceContext", .product(name: "Tracing", package: "swift-distributed-tracing"),
        ], exclude: ["Lua"]),
        .target(name: "ServiceRuntime", dependencies: [
            "CallerTokens", "GRPCHTTP2", "GRPCServices", "PlatformAuth", "RedisClient", "Telemetry",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Instrumentation", package: "swift-distributed-tracing"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "order-service", dependencies: ["OrderLogic", "PlatformProtos", "ServiceRuntime"]),
        .executableTarget(name: "restaurant-service", dependencies: ["PlatformAuth", "RestaurantLogic", "PlatformProtos", "ServiceRuntime"]),
        .executableTarget(name: "delivery-service", dependencies: ["DeliveryLogic", "PlatformProtos", "ServiceRuntime"]),
        .executableTarget(name: "test-client", dependencies: [
            "CallerTokens", "GRPCHTTP2", "GRPCProtos", "PlatformProtos", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "PlatformProtosTests", dependencies: ["PlatformProtos", "GRPCProtos", "TestSupport"]),
        .testTarget(name: "ServicesTests", dependencies: [
            "CallerTokens", "COpenSSL", "OrderLogic", "PlatformAuth", "PlatformCommon", "RestaurantLogic", "DeliveryLogic", "GRPCHTTP2",
            "PlatformProtos", "RedisClient", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
