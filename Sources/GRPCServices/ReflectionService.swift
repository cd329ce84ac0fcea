// gRPC server reflection, in both versions clients speak: `grpc.reflection.v1` (current) and
// `grpc.reflection.v1alpha` (grpcurl 1.8 and most tools in the field). With it, grpcurl and
// friends list, describe and call every service without a copy of the .proto files.
//
// Each version is a bidirectional stream on which every request gets exactly one response, in
// order. The two versions' messages differ only in their package name, which never reaches the
// wire, so both methods are served with the v1 message types; the answers come from one
// `ReflectionIndex` over the embedded descriptors.
import GRPCProtos
import RPCCore

/// Server reflection for a set of .proto files and the services a server lists.
public struct ReflectionService: Sendable {
    private typealias Request = ReflectionV1.ServerReflectionRequest
    private typealias Response = ReflectionV1.ServerReflectionResponse

    /// `grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo`, with v1's identical messages.
    private static let v1alpha = MethodDescriptor<Request, Response>(
        service: ReflectionV1Alpha.ServerReflectionMethods.serviceName, method: "ServerReflectionInfo",
        kind: .bidirectionalStreaming)

    private let index: ReflectionIndex

    /// `files`: the .proto files behind the served services (gRPC's own health and reflection
    /// files are added); `list` answers `served` (the services the server routes) plus health
    /// and reflection.
    public init(files: [ProtoFileDescriptor], served: [String]) {
        let all = files + GRPCProtosDescriptors.all
        let names = served
            + [HealthMethods.serviceName, ReflectionV1.ServerReflectionMethods.serviceName,
               ReflectionV1Alpha.ServerReflectionMethods.serviceName]
        index = ReflectionIndex(files: all, services: Array(Set(names)))
    }

    /// Both versions, ready to register with a server.
    public var services: [ServiceDefinition] {
        [ReflectionV1.ServerReflectionMethods.serverReflectionInfo, Self.v1alpha].map { method in
            ServiceDefinition(name: method.service, routes: [
                Route(bidirectionalStreaming: method) { [index] requests, responses, _ in
                    for try await request in requests {
                        try await responses.write(Self.response(index.answer(Self.query(request)), to: request))
                    }
                },
            ])
        }
    }

    private static func query(_ request: Request) -> ReflectionQuery {
        switch request.messageRequest {
        case .fileByFilename(let name): .fileByName(name)
        case .fileContainingSymbol(let symbol): .fileContainingSymbol(symbol)
        case .fileContainingExtension(let wanted): .fileContainingExtension(type: wanted.containingType, number: wanted.extensionNumber)
        case .allExtensionNumbersOfType(let type): .extensionNumbers(ofType: type)
        case .listServices: .listServices
        case nil: .empty
        }
    }

    private static func response(_ answer: ReflectionAnswer, to request: Request) -> Response {
        let body: Response.MessageResponse = switch answer {
        case .files(let files): .fileDescriptorResponse(.init(fileDescriptorProto: files))
        case .extensionNumbers(let type, let numbers): .allExtensionNumbersResponse(.init(baseTypeName: type, extensionNumber: numbers))
        case .services(let names): .listServicesResponse(.init(service: names.map { .init(name: $0) }))
        case .error(let code, let message): .errorResponse(.init(errorCode: Int32(code.rawValue), errorMessage: message))
        }
        return Response(validHost: request.host, originalRequest: request, messageResponse: body)
    }
}
