// The few file calls the layers above need besides sockets (telemetry reads /proc and writes its
// log lines to standard error), over Glibc, so that their pointer work stays here with the
// sockets' and nothing above touches a buffer's address.
#if canImport(Glibc)
import Glibc
#endif

/// Whole small files, directory sizes and standard error.
public enum SystemFiles {
    /// A file read to its end (for /proc files, whose size is 0 to stat); nil when unreadable.
    public static func contents(of path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            bytes += chunk[..<count]
        }
        return bytes
    }

    /// How many entries a directory has, "." and ".." left out, counted while it is open (so in
    /// /proc/self/fd the descriptor reading it counts too); nil when it cannot be read.
    public static func entryCount(of path: String) -> Int? {
        guard let directory = opendir(path) else { return nil }
        // d_name is declared as 256 bytes, but a record is only as long as its name: its bytes
        // are read where they lie, one by one up to the NUL, since copying the field
        // (`entry.pointee.d_name`) reads up to 255 bytes past the record and, for the last one of
        // the buffer, past its mapping.
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        var count = 0
        while let entry = readdir(directory) {
            let name = UnsafeRawPointer(entry) + nameOffset
            let dot = UInt8(ascii: ".")
            let isDotOrDotDot = name.load(as: UInt8.self) == dot
                && (name.load(fromByteOffset: 1, as: UInt8.self) == 0
                    || name.load(fromByteOffset: 1, as: UInt8.self) == dot && name.load(fromByteOffset: 2, as: UInt8.self) == 0)
            if !isDotOrDotDot { count += 1 }
        }
        closedir(directory)
        return count
    }

    /// Writes `text` to standard error, in one write(2) unless the first is cut short.
    public static func writeStandardError(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                if written <= 0 { break }
                offset += written
            }
        }
    }
}
