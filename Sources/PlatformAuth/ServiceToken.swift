// The token a service presents when it calls another (the restaurant service calling the order
// service's RecordRestaurantDecision): read from a file, and read again when the file changes,
// so an operator (or Kubernetes, rotating a Secret) can replace it without a restart. The file
// is checked at most once a second.
import RPCCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A bearer token kept in a file.
public final class ServiceTokenFile: Sendable {
    public let path: String
    private let state = Mutex<(token: String?, modified: Int, checked: Double)>((nil, -1, -1))

    public init(path: String) { self.path = path }

    /// The token as the file holds it now (surrounding white space dropped); nil when unreadable.
    public func token() -> String? {
        let now = Double(time(nil))
        return state.withLock { state in
            guard now - state.checked >= 1 else { return state.token }
            state.checked = now
            var info = stat()
            guard stat(path, &info) == 0 else { return state.token }
            let modified = Int(info.st_mtim.tv_sec) * 1_000_000_000 + Int(info.st_mtim.tv_nsec)
            if modified != state.modified, let text = Self.read(path) {
                state.modified = modified
                state.token = text
            }
            return state.token
        }
    }

    /// Call options carrying the token, on top of `options`.
    public func authorize(_ options: CallOptions) -> CallOptions {
        guard let token = token() else { return options }
        var options = options
        options.metadata.add("authorization", "Bearer \(token)")
        return options
    }

    private static func read(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes += buffer[0..<count]
            if bytes.count > 64 * 1024 { return nil }
        }
        let text = String(decoding: bytes, as: UTF8.self).trimmingWhitespace
        return text.isEmpty ? nil : text
    }
}

extension String {
    var trimmingWhitespace: String {
        let scalars = unicodeScalars.drop { $0.properties.isWhitespace }.reversed().drop { $0.properties.isWhitespace }.reversed()
        return String(String.UnicodeScalarView(scalars))
    }
}
