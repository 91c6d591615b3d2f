import Foundation
import Testing
import TestSupport
@testable import FinchTensor

/// NF4 against bitsandbytes' own quantize_4bit / dequantize_4bit on the CPU (Tests/Fixtures/nf4: make_nf4.py).
@Suite("NF4 against bitsandbytes")
struct NF4Tests {
    struct Fixture: Decodable {
        let nf4_code: [UInt32]
        let dynamic_map: [UInt32]
        let cases: [Case]
    }
    struct Case: Decodable {
        let name: String
        let values: [UInt32]
        let plain: Plain
        let double: Double
    }
    struct Plain: Decodable {
        let packed: [UInt8]
        let absmax: [UInt32]
        let dequantized: [UInt32]
    }
    struct Double: Decodable {
        let packed: [UInt8]
        let absmax_codes: [UInt8]
        let absmax_scales: [UInt32]
        let offset: UInt32
        let dequantized: [UInt32]
    }

    static let fixture: Fixture? = try? JSONDecoder().decode(
        Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("nf4", "nf4.json"))))

    static func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

    @Test func theTablesAreBitsandbytes() throws {
        let fixture = try #require(Self.fixture)
        #expect(Self.bits(QuantizationTables.nf4) == fixture.nf4_code)
        #expect(Self.bits(QuantizationTables.dynamic8) == fixture.dynamic_map)
        #expect(QuantizationTables.nf4[7] == 0 && QuantizationTables.dynamic8.last == 1)
    }

    @Test func plainQuantisationIsBitwise() throws {
        let fixture = try #require(Self.fixture)
        #expect(fixture.cases.count == 3)
        for c in fixture.cases {
            let values = c.values.map(Float.init(bitPattern:))
            let q = try values.withUnsafeBufferPointer { try NF4(quantizing: $0, doubleQuantization: false) }
            #expect(q.packed == c.plain.packed, "\(c.name)")
            guard case .plain(let absmax) = q.scales else { Issue.record("expected plain scales"); continue }
            #expect(Self.bits(absmax) == c.plain.absmax, "\(c.name)")
            #expect(Self.bits(q.dequantized()) == c.plain.dequantized, "\(c.name)")
        }
    }

    /// The codes, scales and values of double quantisation are bitsandbytes' given its offset; the offset (a mean
    /// torch sums in a CPU-dependent order) is within one unit in the last place.
    @Test func doubleQuantisationIsBitwise() throws {
        let fixture = try #require(Self.fixture)
        for c in fixture.cases {
            let values = c.values.map(Float.init(bitPattern:))
            let q = try values.withUnsafeBufferPointer { try NF4(quantizing: $0, doubleQuantization: true) }
            #expect(q.packed == c.double.packed, "\(c.name)")
            guard case .double(_, _, let offset) = q.scales else { Issue.record("expected double scales"); continue }
            let reference = Float(bitPattern: c.double.offset)
            #expect(abs(offset - reference) <= reference.ulp, "\(c.name): offset \(offset) against \(reference)")
            let absmax = c.plain.absmax.map(Float.init(bitPattern:))
            let (codes, scales) = NF4.quantizeStatistics(absmax, offset: reference)
            #expect(codes == c.double.absmax_codes, "\(c.name)")
            #expect(Self.bits(scales) == c.double.absmax_scales, "\(c.name)")
            let stored = NF4(count: values.count, packed: q.packed, scales: .double(codes: codes, scales: scales, offset: reference))
            #expect(Self.bits(stored.dequantized()) == c.double.dequantized, "\(c.name)")
            #expect(stored.byteCount < values.count * 4 / 7, "4.1 bits a value or so, not \(stored.byteCount) bytes")
        }
    }

    @Test func aNonFiniteValueIsRefusedByIndex() {
        let values: [Float] = [1, 2, .nan, 4]
        #expect { try values.withUnsafeBufferPointer { try NF4(quantizing: $0, doubleQuantization: true) } } throws: {
            "\($0)".contains("value 2 is nan")
        }
    }
}
