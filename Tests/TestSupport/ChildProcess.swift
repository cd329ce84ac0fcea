// Child processes for tests (redis-server, a grpcio server), started with posix_spawn and reaped
// with waitpid: Foundation's `Process.waitUntilExit` spins a run loop forever when called from a
// Swift concurrency thread, which is where tests run.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Starting, reading and stopping a child process.
public enum ChildProcess {
    public struct SpawnError: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// Starts `arguments[0]` with stdin and stderr on /dev/null and stdout on /dev/null or, with
    /// `captureOutput`, on a pipe whose read end is returned (stderr too, with `captureErrors`); no
    /// other descriptor is inherited. No signal is blocked in the child (it would inherit the mask
    /// of a dispatch thread, which blocks SIGTERM).
    public static func spawn(_ arguments: [String], captureOutput: Bool = false,
                             captureErrors: Bool = false) throws -> (pid: pid_t, output: Int32?) {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var pipeFDs: [Int32] = [-1, -1]
        if captureOutput {
            guard pipe(&pipeFDs) == 0 else { throw SpawnError(description: "pipe: errno \(errno)") }
            posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
            if captureErrors { posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 2) }
            posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
            posix_spawn_file_actions_addclose(&actions, pipeFDs[1])
        }
        for fd in Int32(0)...2 where !(captureOutput && (fd == 1 || (fd == 2 && captureErrors))) {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        // Nothing else is inherited: a long-lived child (a cluster node, a sentinel) holding a
        // copy of a test's client socket would keep that connection open after the test closed it.
        _ = closeFrom(&actions, 3)
        let cArguments = arguments.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, arguments[0], &actions, &attributes, cArguments, environ)
        if captureOutput { close(pipeFDs[1]) }
        guard result == 0 else {
            if captureOutput { close(pipeFDs[0]) }
            throw SpawnError(description: "posix_spawn \(arguments[0]): \(String(cString: strerror(result)))")
        }
        return (pid, captureOutput ? pipeFDs[0] : nil)
    }

    /// Reads one line from `fd`, giving up after `timeoutSeconds` or at end of file.
    public static func readLine(_ fd: Int32, timeoutSeconds: Int32 = 30) -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while poll(&poller, 1, timeoutSeconds * 1000) > 0, read(fd, &byte, 1) == 1 {
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
        return nil
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), which Swift's Glibc module
    /// does not import: looked up by name.
    private static let closeFrom: @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32 = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np") else {
            fatalError("glibc 2.34 or later needed (posix_spawn_file_actions_addclosefrom_np)")
        }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32).self)
    }()

    /// Runs a command to its end and returns what it printed (stdout), e.g. a `redis-cli` call.
    /// Gives up reading after `timeoutSeconds` of silence.
    public static func output(of arguments: [String], timeoutSeconds: Int32 = 60) throws -> String {
        try run(arguments, mergingErrors: false, timeoutSeconds: timeoutSeconds).output
    }

    /// Runs a command to its end: its exit status (-1 when it did not exit normally) and what it
    /// printed, on stdout and also on stderr with `mergingErrors`. Gives up reading after
    /// `timeoutSeconds` of silence (and then kills it).
    public static func run(_ arguments: [String], mergingErrors: Bool = true,
                           timeoutSeconds: Int32 = 60) throws -> (status: Int32, output: String) {
        let (pid, fd) = try spawn(arguments, captureOutput: true, captureErrors: mergingErrors)
        defer { close(fd!) }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var poller = pollfd(fd: fd!, events: Int16(POLLIN), revents: 0)
        var silent = false
        while true {
            guard poll(&poller, 1, timeoutSeconds * 1000) > 0 else {
                silent = true
                break
            }
            let count = read(fd!, &buffer, buffer.count)
            guard count > 0 else { break }
            output += buffer[..<count]
        }
        if silent { kill(pid, SIGKILL) }  // given up on
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1, errno == EINTR {}
        // WIFEXITED / WEXITSTATUS, which Swift does not import.
        let exited = status & 0x7f == 0
        return (exited ? (status >> 8) & 0xff : -1, String(decoding: output, as: UTF8.self))
    }

    /// Runs blocking work (starting a multi-node fixture, polling it) on a thread of its own, so
    /// it does not hold one of the few threads Swift concurrency runs the tests on: on a 2-core
    /// machine two blocked ones would stall every other test.
    public static func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try work() }) }.start()
        }
    }

    /// Sends `signal` and waits for the process to exit.
    public static func stop(_ pid: pid_t, signal: Int32 = SIGTERM) {
        kill(pid, signal)
        reap(pid)
    }

    /// Waits for an exited (or exiting) child.
    public static func reap(_ pid: pid_t) {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1, errno == EINTR {}
    }
}
