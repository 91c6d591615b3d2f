/// The `post_processor` section of tokenizer.json: the special tokens added around an encoded text.
indirect enum PostProcessor {
    enum Item { case special(String), sequence }

    case none
    case sequence([PostProcessor])
    /// `single` template: special tokens (by name, resolved through `special_tokens`) around the text.
    case template(items: [Item], specialIds: [String: [Int]])
    /// ByteLevel's post-processor only trims offsets; it adds no tokens.
    case byteLevel

    init(_ json: JSONValue?, file: String) throws {
        guard let json, !json.isNull else { self = .none; return }
        guard let type = json["type"]?.string else { throw FormatError(file: file, "post_processor without a \"type\"") }
        switch type {
        case "Sequence":
            guard let list = json["processors"]?.array else { throw FormatError(file: file, "Sequence post_processor without \"processors\"") }
            self = .sequence(try list.map { try PostProcessor($0, file: file) })
        case "ByteLevel":
            self = .byteLevel
        case "TemplateProcessing":
            guard let single = json["single"]?.array else { throw FormatError(file: file, "TemplateProcessing without a \"single\" template") }
            var items: [Item] = []
            for entry in single {
                if let name = entry["SpecialToken"]?["id"]?.string {
                    items.append(.special(name))
                } else if entry["Sequence"] != nil {
                    items.append(.sequence)
                } else {
                    throw FormatError(file: file,
                                      "TemplateProcessing item \(entry.summary) is neither SpecialToken nor Sequence")
                }
            }
            var ids: [String: [Int]] = [:]
            for (name, value) in json["special_tokens"]?.object ?? [:] {
                guard let list = value["ids"]?.array?.compactMap(\.int) else {
                    throw FormatError(file: file, "TemplateProcessing special token \"\(name)\" without \"ids\"")
                }
                if let bad = list.first(where: { !Tokenizer.validIds.contains($0) }) {
                    throw FormatError(file: file, "TemplateProcessing special token \"\(name)\" has id \(bad); ids run from 0 to \(Tokenizer.validIds.upperBound)")
                }
                ids[name] = list
            }
            for case .special(let name) in items where ids[name] == nil {
                throw FormatError(file: file,
                                  "TemplateProcessing uses special token \"\(name)\" missing from \"special_tokens\"")
            }
            self = .template(items: items, specialIds: ids)
        default:
            throw FormatError(file: file, "post_processor \"\(type)\" is not supported (Finch implements TemplateProcessing, ByteLevel, Sequence)")
        }
    }

    func apply(_ ids: [Int]) -> [Int] {
        switch self {
        case .none, .byteLevel: return ids
        case .sequence(let list): return list.reduce(ids) { $1.apply($0) }
        case let .template(items, specialIds):
            return items.flatMap { item -> [Int] in
                switch item {
                case .special(let name): return specialIds[name] ?? []
                case .sequence: return ids
                }
            }
        }
    }
}
