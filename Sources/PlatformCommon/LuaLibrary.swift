// The services' Lua as Redis Functions libraries, one per module.
//
// A library is the domain prelude (domainLua), the event functions (EventLua.events), the
// module's helpers and then its functions, each registered as `<library>_<name>` with the body of
// one Lua/*.lua file (which reads KEYS and ARGV as a script does). Redis runs a library's top
// level once per node, when it is loaded, so the tables and helper functions every call uses are
// built once, not on every call as a script's are. The library's name carries a hash of its code:
// a build with other Lua loads a library of its own beside the old one, so replicas of two
// versions can run side by side during a rolling update, each calling its own code. The client
// loads a library on the first call that finds its function missing on a node
// (`RedisClient.call(function:library:...)`), so a new node, a failover to a node that never had
// it, or a flushed server needs nothing done by hand.
/// One module's Lua functions, loaded into Redis as a library.
public final class LuaLibrary: Sendable {
    /// `<module>_<hash of the code>`.
    public let name: String
    /// The library's source, as FUNCTION LOAD takes it.
    public let code: String
    private let functions: Set<String>

    /// `helpers` run once at load; each of `functions` (name -> body) becomes a function. Those
    /// in `readOnly` are registered `no-writes`, so Redis runs them also when it refuses writes
    /// (out of memory, too few replicas for `min-replicas-to-write`).
    public init(module: String, helpers: [String] = [], functions: [String: String], readOnly: Set<String> = []) {
        precondition(readOnly.isSubset(of: functions.keys), "read-only functions must be functions of the library")
        let names = functions.keys.sorted()
        let body = ([domainLua, EventLua.events] + helpers).joined(separator: "\n")
        let hash = fnv1a((body + names.map { "\($0) \(readOnly.contains($0))\n\(functions[$0]!)" }.joined(separator: "\n")).utf8)
        let name = "\(module)_\(String(hash, radix: 16))"
        let registrations = names.map { function in
            "redis.register_function{function_name = '\(name)_\(function)', callback = function(KEYS, ARGV)\n\(functions[function]!)\nend"
                + (readOnly.contains(function) ? ", flags = {'no-writes'}}" : "}")
        }
        self.name = name
        self.functions = Set(names)
        code = (["#!lua name=\(name)", body] + registrations).joined(separator: "\n")
    }

    /// The library's function `name` (one of those it was made with).
    public func function(_ name: String) -> LuaFunction {
        precondition(functions.contains(name), "library \(self.name) has no function \(name)")
        return LuaFunction(library: self, name: "\(self.name)_\(name)")
    }
}

/// A function of a LuaLibrary.
public struct LuaFunction: Sendable {
    public let library: LuaLibrary
    /// The name Redis knows it by.
    public let name: String
}
