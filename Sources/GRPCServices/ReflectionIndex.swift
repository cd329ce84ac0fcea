// The questions server reflection answers, independent of the protocol version that asks them.
//
// The index maps every symbol (service, method, message, enum) and every file name to the
// file that defines it; an answer carries that file and, after it, every file it imports,
// transitively, each once (as grpc-go's and grpc-java's reflection services do, so a client
// needs a single round trip per symbol). Files are the serialized FileDescriptorProtos that
// protoc wrote, embedded by the code generator; nothing is parsed at run time.
import RPCCore

/// What a reflection client can ask.
enum ReflectionQuery: Sendable, Equatable {
    case fileByName(String)
    case fileContainingSymbol(String)
    case fileContainingExtension(type: String, number: Int32)
    case extensionNumbers(ofType: String)
    case listServices
    /// A request with none of the above set.
    case empty
}

/// What the server answers.
enum ReflectionAnswer: Sendable, Equatable {
    case files([[UInt8]])
    case extensionNumbers(type: String, numbers: [Int32])
    case services([String])
    case error(StatusCode, String)
}

/// Every symbol and file a server can describe.
struct ReflectionIndex: Sendable {
    private let files: [String: ProtoFileDescriptor]
    private let fileOfSymbol: [String: String]
    private let services: [String]

    /// `files`: the .proto files to describe; `services`: the names the server lists.
    init(files: [ProtoFileDescriptor], services: [String]) {
        var byName: [String: ProtoFileDescriptor] = [:]
        var bySymbol: [String: String] = [:]
        for file in files {
            byName[file.name] = file
            for symbol in file.symbols { bySymbol[symbol] = file.name }
        }
        self.files = byName
        fileOfSymbol = bySymbol
        self.services = services.sorted()
    }

    func answer(_ query: ReflectionQuery) -> ReflectionAnswer {
        switch query {
        case .listServices:
            return .services(services)
        case .fileByName(let name):
            guard files[name] != nil else { return .error(.notFound, "file \(name) not found") }
            return .files(withDependencies(name))
        case .fileContainingSymbol(let symbol):
            // grpcurl and others sometimes send a leading dot.
            let name = symbol.hasPrefix(".") ? String(symbol.dropFirst()) : symbol
            guard let file = fileOfSymbol[name] else { return .error(.notFound, "symbol \(name) not found") }
            return .files(withDependencies(file))
        case .fileContainingExtension(let type, let number):
            return .error(.notFound, "no extension \(number) of \(type) is known")
        case .extensionNumbers(let type):
            guard fileOfSymbol[type] != nil else { return .error(.notFound, "type \(type) not found") }
            return .extensionNumbers(type: type, numbers: [])
        case .empty:
            return .error(.invalidArgument, "the reflection request asks nothing")
        }
    }

    /// The file first, then what it imports, depth first, each once.
    private func withDependencies(_ name: String) -> [[UInt8]] {
        var seen: Set<String> = []
        var ordered: [[UInt8]] = []
        func visit(_ name: String) {
            guard let file = files[name], seen.insert(name).inserted else { return }
            ordered.append(file.serialized)
            for dependency in file.dependencies { visit(dependency) }
        }
        visit(name)
        return ordered
    }
}
