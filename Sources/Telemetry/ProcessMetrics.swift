// The process's own figures under the names Prometheus' client libraries give them
// (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
// `process_max_fds`, `process_start_time_seconds`), read from /proc when scraped. Linux only,
// as the services are.
#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import Prometheus
import Synchronization

/// Adds the process metrics to `metrics`, read at each scrape.
public func addProcessMetrics(to metrics: ServiceMetrics) {
    let resident = metrics.gauge("process_resident_memory_bytes", "Resident memory size in bytes.")
    // A counter, as the convention has it: advanced by what was spent since the last scrape.
    let cpu = metrics.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
    let cpuCounted = Mutex(0.0)
    let openFDs = metrics.gauge("process_open_fds", "Number of open file descriptors.")
    let maxFDs = metrics.gauge("process_max_fds", "Maximum number of open file descriptors.")
    let startTime = metrics.gauge("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.")
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
    let bootTime = ProcessFigures.bootTime()
    metrics.addCollector {
        let figures = ProcessFigures.read()
        if let stat = figures.stat {
            let spent = (stat.userTicks + stat.systemTicks) / ticks
            let delta = cpuCounted.withLock { counted in
                defer { counted = max(counted, spent) }
                return spent - counted
            }
            if delta > 0 { cpu.increment(by: delta) }
            resident.set(stat.residentPages * pageSize)
            if let bootTime { startTime.set(bootTime + stat.startTicks / ticks) }
        }
        openFDs.set(Double(figures.openFDs))
        maxFDs.set(figures.maxFDs)
    }
}

enum ProcessFigures {
    struct Stat {
        let userTicks: Double
        let systemTicks: Double
        let startTicks: Double
        let residentPages: Double
    }

    static func read() -> (stat: Stat?, openFDs: Int, maxFDs: Double) {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return (stat(), openFileDescriptors(), Double(limit.rlim_cur))
    }

    /// /proc/self/stat: the fields after the command name (which may hold spaces and
    /// parentheses, so the split starts after its last ")"). utime, stime, starttime and rss are
    /// fields 14, 15, 22 and 24.
    static func stat() -> Stat? {
        guard let text = contents(of: "/proc/self/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (the state).
        func field(_ number: Int) -> Double? { fields.count > number - 3 ? Double(fields[number - 3]) : nil }
        guard let user = field(14), let system = field(15), let start = field(22), let rss = field(24) else { return nil }
        return Stat(userTicks: user, systemTicks: system, startTicks: start, residentPages: rss)
    }

    /// The boot time in seconds since the epoch (/proc/stat's btime), to place the start time.
    static func bootTime() -> Double? {
        guard let text = contents(of: "/proc/stat") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingPrefix(" "))
        }
        return nil
    }

    static func openFileDescriptors() -> Int {
        // Less the descriptor that reads the directory.
        max(0, (SystemFiles.entryCount(of: "/proc/self/fd") ?? 1) - 1)
    }

    static func contents(of path: String) -> String? {
        SystemFiles.contents(of: path).map { String(decoding: $0, as: UTF8.self) }
    }
}
