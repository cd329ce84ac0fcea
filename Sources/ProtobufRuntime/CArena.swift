// The bridge between Swift values and protobuf-c structs, used by the generated codecs of every
// module (the platform's messages, gRPC's own health and reflection messages, the benchmarks').
//
// Encoding fills a protobuf-c struct whose strings, arrays and sub-messages are allocated in a
// `CArena` and freed together once `pack` has copied them into the output bytes. Decoding lets
// protobuf-c unpack into its own heap struct, copies the fields out into Swift values, and frees
// it. All unsafe pointer work of the codecs lives in this file and the generated code.
@_exported import CProtobufC
import RPCCore
#if canImport(Glibc)
import Glibc
#endif

/// Allocations that live while one message is packed: a bump allocator over one block (grown by
/// whole extra blocks when a message needs more), so a message costs one malloc, not one per field.
public final class CArena {
    public init() {}

    private static let blockSize = 4096
    private var block: UnsafeMutableRawPointer?
    private var used = 0
    private var capacity = 0
    private var retired: [UnsafeMutableRawPointer] = []

    public func release() {
        if let block { free(block) }
        for pointer in retired { free(pointer) }
        block = nil
        retired.removeAll()
        used = 0
        capacity = 0
    }

    public func cString(_ text: String) -> UnsafeMutablePointer<CChar> {
        var text = text
        return text.withUTF8 { utf8 in
            let pointer = allocate(UInt8.self, count: utf8.count + 1)
            if let base = utf8.baseAddress { pointer.initialize(from: base, count: utf8.count) }
            pointer[utf8.count] = 0
            return UnsafeMutableRawPointer(pointer).assumingMemoryBound(to: CChar.self)
        }
    }

    public func cStrings(_ texts: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? {
        guard !texts.isEmpty else { return nil }
        let array = allocate(UnsafeMutablePointer<CChar>?.self, count: texts.count)
        for (index, text) in texts.enumerated() { array[index] = cString(text) }
        return array
    }

    public func values<T>(_ values: [T]) -> UnsafeMutablePointer<T>? {
        guard !values.isEmpty else { return nil }
        let array = allocate(T.self, count: values.count)
        for (index, value) in values.enumerated() { (array + index).initialize(to: value) }
        return array
    }

    /// A `bytes` field's value: a copy of `bytes` in the arena (nothing allocated when empty).
    public func binary(_ bytes: [UInt8]) -> ProtobufCBinaryData {
        guard !bytes.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        let pointer = allocate(UInt8.self, count: bytes.count)
        bytes.withUnsafeBufferPointer { pointer.initialize(from: $0.baseAddress!, count: $0.count) }
        return ProtobufCBinaryData(len: bytes.count, data: pointer)
    }

    /// A repeated `bytes` field's array, each element copied into the arena.
    public func binaries(_ values: [[UInt8]]) -> UnsafeMutablePointer<ProtobufCBinaryData>? {
        guard !values.isEmpty else { return nil }
        let array = allocate(ProtobufCBinaryData.self, count: values.count)
        for (index, value) in values.enumerated() { (array + index).initialize(to: binary(value)) }
        return array
    }

    public func message<M, C>(_ value: M, as: C.Type, fill: (M, inout C) -> Void) -> UnsafeMutablePointer<C> {
        let pointer = allocate(C.self, count: 1)
        // protobuf-c structs are plain C data: zeroed memory is a valid starting point for `init`.
        UnsafeMutableRawPointer(pointer).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<C>.size)
        fill(value, &pointer.pointee)
        return pointer
    }

    public func messages<M, C>(_ values: [M], as type: C.Type, fill: (M, inout C) -> Void) -> UnsafeMutablePointer<UnsafeMutablePointer<C>?>? {
        guard !values.isEmpty else { return nil }
        let array = allocate(UnsafeMutablePointer<C>?.self, count: values.count)
        for (index, value) in values.enumerated() { array[index] = message(value, as: type, fill: fill) }
        return array
    }

    private func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let size = max(1, MemoryLayout<T>.stride * count)
        let alignment = MemoryLayout<T>.alignment
        var offset = (used + alignment - 1) & ~(alignment - 1)
        if block == nil || offset + size > capacity {
            if let block { retired.append(block) }
            capacity = max(Self.blockSize, size)
            block = malloc(capacity)!
            offset = 0
        }
        used = offset + size
        return (block! + offset).bindMemory(to: T.self, capacity: count)
    }

    // MARK: - Helpers for decoding and packing

    public static func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
        pointer.map { String(cString: $0) } ?? ""
    }

    /// A decoded `bytes` field's value, copied out of protobuf-c's buffer.
    public static func bytes(_ data: ProtobufCBinaryData) -> [UInt8] {
        guard data.len > 0, let base = data.data else { return [] }
        return Array(UnsafeBufferPointer(start: base, count: data.len))
    }

    public static func buffer<T>(_ pointer: UnsafeMutablePointer<T>?, count: Int) -> UnsafeBufferPointer<T> {
        UnsafeBufferPointer(start: pointer, count: pointer == nil ? 0 : count)
    }

    public static func pack<C>(
        _ message: inout C,
        size: (UnsafePointer<C>) -> Int,
        pack: (UnsafePointer<C>, UnsafeMutablePointer<UInt8>) -> Int
    ) -> [UInt8] {
        withUnsafePointer(to: &message) { pointer in
            let length = size(pointer)
            return [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
                initialized = length == 0 ? 0 : pack(pointer, buffer.baseAddress!)
            }
        }
    }

    /// Packs a message through its descriptor, for the messages protoc-c writes no `__pack` for
    /// (nested ones). `message` must be a protobuf-c message struct after its `__init`.
    public static func pack<C>(message: inout C) -> [UInt8] {
        withUnsafePointer(to: &message) { pointer in
            let base = UnsafeRawPointer(pointer).assumingMemoryBound(to: ProtobufCMessage.self)
            let length = protobuf_c_message_get_packed_size(base)
            return [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
                initialized = length == 0 ? 0 : protobuf_c_message_pack(base, buffer.baseAddress!)
            }
        }
    }

    /// Unpacks a message through its descriptor (as `__init` set it), for the messages protoc-c
    /// writes no `__unpack` for (nested ones).
    public static func unpack<C, M>(
        _ bytes: [UInt8],
        descriptor: UnsafePointer<ProtobufCMessageDescriptor>,
        convert: (C) -> M
    ) throws(MessageDecodingError) -> M {
        precondition(descriptor.pointee.sizeof_message == MemoryLayout<C>.size, "descriptor of another message")
        let message = bytes.withUnsafeBufferPointer { protobuf_c_message_unpack(descriptor, nil, $0.count, $0.baseAddress) }
        guard let message else { throw MessageDecodingError(messageType: String(describing: M.self)) }
        defer { protobuf_c_message_free_unpacked(message, nil) }
        return convert(UnsafeRawPointer(message).assumingMemoryBound(to: C.self).pointee)
    }

    public static func unpack<C, M>(
        _ bytes: [UInt8],
        unpack: (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<C>?,
        free: (UnsafeMutablePointer<C>?, UnsafeMutablePointer<ProtobufCAllocator>?) -> Void,
        convert: (C) -> M
    ) throws(MessageDecodingError) -> M {
        let message = bytes.withUnsafeBufferPointer { unpack(nil, $0.count, $0.baseAddress) }
        guard let message else { throw MessageDecodingError(messageType: String(describing: M.self)) }
        defer { free(message, nil) }
        return convert(message.pointee)
    }
}
