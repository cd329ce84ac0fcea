@testable import GRPCHTTP2
import RPCCore
import Testing

@Suite struct WireFormatTests {
    @Test func timeoutsParseEveryUnit() {
        #expect(GRPCTimeout.parse("1H") == .seconds(3600))
        #expect(GRPCTimeout.parse("2M") == .seconds(120))
        #expect(GRPCTimeout.parse("3S") == .seconds(3))
        #expect(GRPCTimeout.parse("250m") == .milliseconds(250))
        #expect(GRPCTimeout.parse("7u") == .microseconds(7))
        #expect(GRPCTimeout.parse("99999999n") == .nanoseconds(99_999_999))
    }

    @Test func hugeTimeoutsAreCappedNotTrapped() {
        #expect(GRPCTimeout.parse("99999999H") == GRPCTimeout.maximum)
        #expect(GRPCTimeout.encode(.seconds(Int64.max)) == "2562048H")  // Int64.max nanoseconds, rounded up
    }

    @Test func malformedTimeoutsAreRejected() {
        for text in ["", "S", "10", "123456789S", "1x", "-1S", "1.5S"] {
            #expect(GRPCTimeout.parse(text) == nil, "\(text)")
        }
    }

    @Test func timeoutsEncodeInAtMostEightDigitsAndNeverShorter() {
        #expect(GRPCTimeout.encode(.milliseconds(250)) == "250000u")
        #expect(GRPCTimeout.encode(.seconds(200)) == "200000m")
        #expect(GRPCTimeout.encode(.seconds(86400 * 3650)) == "5256000M")
        for duration: Duration in [.nanoseconds(1), .milliseconds(1234), .seconds(99_999)] {
            let encoded = GRPCTimeout.encode(duration)
            #expect(encoded.count <= 9)
            #expect(GRPCTimeout.parse(encoded)! >= duration)
        }
    }

    @Test func statusMessagesArePercentEncodedAsTheSpecSays() {
        #expect(StatusMessageEncoding.encode("plain text") == "plain text")
        #expect(StatusMessageEncoding.encode("100%") == "100%25")
        #expect(StatusMessageEncoding.encode("café\n") == "caf%C3%A9%0A")
        let message = "order 'x' ✓ not found: 100% sure\r\n"
        #expect(StatusMessageEncoding.decode(StatusMessageEncoding.encode(message)) == message)
        #expect(StatusMessageEncoding.decode("bad %zz escape %") == "bad %zz escape %")
    }

    @Test func base64RoundTripsBinaryMetadata() {
        let bytes: [UInt8] = [0, 255, 1, 254, 2]
        #expect(Base64.encode(bytes) == "AP8B/gI=")
        #expect(Base64.decode("AP8B/gI=") == bytes)
        #expect(Base64.decode("AP8B/gI") == bytes)  // unpadded, as some clients send
        #expect(Base64.decode("not base64!") == nil)
        for count in 0..<8 {
            let value = (0..<count).map { UInt8($0 * 37 % 256) }
            #expect(Base64.decode(Base64.encode(value)) == value)
        }
    }

    @Test func framingAndAssemblyAcrossArbitraryChunks() throws {
        let framed = MessageFraming.frame([1, 2, 3]) + MessageFraming.frame([]) + MessageFraming.frame([9])
        var assembler = MessageAssembler(maxMessageSize: 100)
        for byte in framed {
            try [byte].withUnsafeBytes { try assembler.append($0) }
        }
        #expect(assembler.messages == [[1, 2, 3], [], [9]])
        #expect(!assembler.hasPartialMessage)
    }

    @Test(arguments: [1, 2, 3, 5, 6, 7, 64])
    func outgoingBodyReadsTheFramedMessageInAnyChunkSize(capacity: Int) {
        let message: [UInt8] = Array(1...20)
        var body = OutgoingBody(message: message)
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: capacity)
        while !body.isFinished {
            let count = chunk.withUnsafeMutableBytes { body.read(into: $0.baseAddress!, capacity: capacity) }
            #expect(count > 0 && count <= capacity)
            out += chunk[..<count]
        }
        #expect(out == MessageFraming.frame(message))
    }

    @Test func assemblerRejectsOversizedMessagesFromThePrefixAlone() {
        var assembler = MessageAssembler(maxMessageSize: 10)
        #expect(throws: MessageAssembler.Failure.self) {
            try [0, 0, 0, 0, 11].withUnsafeBytes { try assembler.append($0) }
        }
    }

    @Test func httpStatusesMapAsTheSpecSays() {
        #expect(StatusCode(httpStatus: 400) == .internal)
        #expect(StatusCode(httpStatus: 401) == .unauthenticated)
        #expect(StatusCode(httpStatus: 403) == .permissionDenied)
        #expect(StatusCode(httpStatus: 404) == .unimplemented)
        #expect(StatusCode(httpStatus: 503) == .unavailable)
        #expect(StatusCode(httpStatus: 418) == .unknown)
    }
}
