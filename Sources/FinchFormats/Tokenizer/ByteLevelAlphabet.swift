/// GPT-2's reversible map between bytes and printable characters: bytes that are printable (and not a
/// space) stand for themselves; the rest take the code points from 256 upwards, in byte order.
enum ByteLevelAlphabet {
    static let byteToScalar: [Unicode.Scalar] = {
        let printable = Set(Array(33...126) + Array(161...172) + Array(174...255))
        var next: UInt32 = 256
        return (0..<256).map { b in
            if printable.contains(b) { return Unicode.Scalar(UInt32(b))! }
            defer { next += 1 }
            return Unicode.Scalar(next)!
        }
    }()

    static let scalarToByte: [Unicode.Scalar: UInt8] = {
        Dictionary(uniqueKeysWithValues: byteToScalar.enumerated().map { ($1, UInt8($0)) })
    }()

    /// The text's UTF-8 bytes, each written as its stand-in character.
    static func encode(_ text: Substring) -> String {
        var out = String.UnicodeScalarView()
        for b in text.utf8 { out.append(byteToScalar[Int(b)]) }
        return String(out)
    }

    /// Back to bytes; characters outside the alphabet are kept as their own UTF-8.
    static func decodeBytes(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = []
        for s in text.unicodeScalars {
            if let b = scalarToByte[s] { bytes.append(b) } else { bytes.append(contentsOf: Array(String(s).utf8)) }
        }
        return bytes
    }
}
