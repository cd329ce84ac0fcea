import EventLoop
import Foundation
import Synchronization
import Testing

@Suite struct EventLoopTests {
    @Test func executeRunsOnTheLoopInOrder() async {
        let loop = EventLoop(name: "test")
        defer { loop.shutdownGracefully() }
        let seen = Mutex<[Int]>([])
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            for value in 0..<100 {
                loop.execute {
                    precondition(loop.inEventLoop)
                    seen.withLock { $0.append(value) }
                }
            }
            loop.execute { done.resume() }
        }
        #expect(seen.withLock { $0 } == Array(0..<100))
        #expect(!loop.inEventLoop)
    }

    @Test func timersFireInDeadlineOrderAndCancelledOnesDoNot() async {
        let loop = EventLoop(name: "timers")
        defer { loop.shutdownGracefully() }
        let fired = Mutex<[String]>([])
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            loop.execute {
                loop.schedule(after: .milliseconds(30)) { fired.withLock { $0.append("late") }; done.resume() }
                let cancelled = loop.schedule(after: .milliseconds(10)) { fired.withLock { $0.append("cancelled") } }
                loop.schedule(after: .milliseconds(5)) { fired.withLock { $0.append("early") } }
                loop.cancel(cancelled)
            }
        }
        #expect(fired.withLock { $0 } == ["early", "late"])
    }

    @Test func listenOnAFreePortAndConnect() throws {
        let (listener, port) = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { Socket.close(listener) }
        #expect(port > 0)
        let client = try Socket.connect(host: "127.0.0.1", port: port)
        defer { Socket.close(client) }
        var accepted: Int32?
        for _ in 0..<100 where accepted == nil {
            if case .connection(let fd) = Socket.accept(listener) { accepted = fd }
            if accepted == nil { usleepMilliseconds(5) }
        }
        #expect(accepted != nil)
        if let accepted { Socket.close(accepted) }
    }

    @Test func listeningOnABusyPortIsAnError() throws {
        let (listener, port) = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { Socket.close(listener) }
        #expect(throws: SocketError.self) { try Socket.listen(host: "127.0.0.1", port: port) }
    }

    /// Thousands of entries, so readdir refills its buffer many times and records of every
    /// length end it: each is counted once, only "." and ".." are left out, and no read strays
    /// past a record (the process metrics count /proc/self/fd this way at every scrape).
    @Test func entryCountCountsEveryEntryButDotAndDotDot() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("entries-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let names = [".hidden", "..x", "a"] + (0..<3_000).map { String(repeating: "n", count: 1 + $0 % 200) + String($0) }
        for name in names {
            #expect(FileManager.default.createFile(atPath: directory.appendingPathComponent(name).path, contents: nil))
        }
        #expect(SystemFiles.entryCount(of: directory.path) == names.count)
        #expect(SystemFiles.entryCount(of: directory.appendingPathComponent("missing").path) == nil)
    }

    @Test func contentsReadsAFileToItsEnd() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("contents-\(UUID().uuidString)")
        let bytes = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try Data(bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(SystemFiles.contents(of: file.path) == bytes)
        #expect(SystemFiles.contents(of: file.path + "-missing") == nil)
    }
}

#if canImport(Glibc)
import Glibc
func usleepMilliseconds(_ ms: UInt32) { usleep(ms * 1000) }
#endif
