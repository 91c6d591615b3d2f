import Foundation
import FinchAdapters
import FinchFormats
import Yams

/// A recipe as loaded: the typed values, where each came from, and the text of the resolved recipe.
public struct LoadedRecipe: Sendable {
    public let recipe: Recipe
    public let file: String
    /// Line of each key in the file (keys set only by default or override have none).
    public let lines: [String: Int]

    /// A recipe made in code (`file` names it in messages; `lines` locates keys in a file, when there is one).
    public init(recipe: Recipe, file: String, lines: [String: Int] = [:]) {
        self.recipe = recipe
        self.file = file
        self.lines = lines
    }

    /// The resolved recipe as YAML: every key with its value, overrides applied.
    public var resolvedYAML: String { RecipeLoader.yaml(recipe) }

    /// A stable 64-bit FNV-1a hash of the resolved recipe.
    public var hash: String { RecipeLoader.hash(resolvedYAML) }
}

public enum RecipeLoader {
    /// Reads a recipe file and applies `key.path=value` overrides.
    public static func load(path: String, overrides: [String] = []) throws -> LoadedRecipe {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RecipeError(file: path, "cannot read the recipe file")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw RecipeError(file: path, "is not UTF-8 text") }
        return try parse(text, file: path, overrides: overrides)
    }

    public static func parse(_ text: String, file: String, overrides: [String] = []) throws -> LoadedRecipe {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw RecipeError(file: file, line: yamlLine(error), "is not valid YAML (\(yamlProblem(error)))")
        } catch {
            throw RecipeError(file: file, "is not valid YAML")
        }
        // Read everything first: the adapter type decides which adapter keys have a place to go.
        var lines: [String: Int] = [:]
        var fromFile: [(field: RecipeField, value: RecipeValue)] = []
        if let node {
            guard let mapping = node.mapping else {
                throw RecipeError(file: file, line: node.mark?.line, "a recipe is a mapping of keys to values")
            }
            for (key, value, line) in try flatten(mapping, prefix: "", file: file) {
                guard let field = RecipeSchema.byKey[key] else {
                    throw RecipeError(file: file, line: line, "unknown key '\(key)'\(suggestion(for: key))")
                }
                if lines[key] != nil { throw RecipeError(file: file, line: line, "key '\(key)' is given twice") }
                let typed = try convert(value, kind: field.kind) { message in
                    RecipeError(file: file, line: line, "\(key): \(message)")
                }
                fromFile.append((field, typed))
                lines[key] = line
            }
        }
        var fromOverrides: [(field: RecipeField, value: RecipeValue, origin: String)] = []
        for override in overrides {
            let origin = "override '\(override)'"
            guard let eq = override.firstIndex(of: "="), eq != override.startIndex else {
                throw RecipeError(file: origin, "expected key.path=value")
            }
            let key = String(override[..<eq]).trimmingCharacters(in: .whitespaces)
            let raw = String(override[override.index(after: eq)...])
            guard let field = RecipeSchema.byKey[key] else {
                let fields = RecipeSchema.fields.map(\.key).filter { $0.hasPrefix(key + ".") }
                if !fields.isEmpty {
                    let some = fields.prefix(3).joined(separator: ", ")
                    throw RecipeError(file: origin, "'\(key)' is a section; override one of its keys (\(some), …)")
                }
                throw RecipeError(file: origin, "unknown key '\(key)'\(suggestion(for: key))")
            }
            let parsed: Node
            do {
                parsed = try Yams.compose(yaml: raw.isEmpty ? "\"\"" : raw) ?? Node("")
            } catch {
                throw RecipeError(file: origin, "\(key): the value is not valid YAML")
            }
            let typed = try convert(parsed, kind: field.kind) { RecipeError(file: origin, "\(key): \($0)") }
            fromOverrides.append((field, typed, origin))
        }

        // The type: the command line's, else the file's. Switching it on the command line tries another method on
        // the file, whose keys of the old type are then left out; a key of another type given beside it is not.
        var recipe = Recipe()
        let typeKey = "adapter.type"
        let typeOverride = fromOverrides.last { $0.field.key == typeKey }
        if let type = typeOverride?.value ?? fromFile.first(where: { $0.field.key == typeKey })?.value {
            RecipeSchema.byKey[typeKey]!.write(&recipe, type)
        }
        for (field, value) in fromFile where field.key != typeKey {
            if typeOverride != nil, let owner = field.adapterType, owner != recipe.adapter.kind { continue }
            try set(field, value, in: &recipe, origin: file, line: lines[field.key])
        }
        var overridden: Set<String> = []
        for (field, value, origin) in fromOverrides {
            if field.key != typeKey { try set(field, value, in: &recipe, origin: origin, line: nil) }
            let key = field.key
            lines.removeValue(forKey: key)
            overridden.insert(key)
            // The run's length given on the command line replaces the file's other way of giving it.
            if key == "training.steps", !overridden.contains("training.epochs") {
                recipe.epochs = nil
                lines.removeValue(forKey: "training.epochs")
            }
            if key == "training.epochs", !overridden.contains("training.steps") {
                recipe.steps = nil
                lines.removeValue(forKey: "training.steps")
            }
        }
        for field in RecipeSchema.fields where field.required {
            guard case .string(let v)? = field.read(recipe), !v.isEmpty else {
                throw RecipeError(file: file, "missing required key '\(field.key)' (\(field.summary))")
            }
        }
        if recipe.outputDirectory.isEmpty {
            let name = ((file as NSString).lastPathComponent as NSString).deletingPathExtension
            recipe.outputDirectory = "runs/" + (name.isEmpty ? "run" : name)
        }
        for field in RecipeSchema.fields {
            if let problem = field.check(recipe) {
                throw RecipeError(file: file, line: lines[field.key], "\(field.key): \(problem)")
            }
        }
        return LoadedRecipe(recipe: recipe, file: file, lines: lines)
    }

    /// Writes one key's value. A key of another adapter type than the recipe's would change nothing, so a value of
    /// its own is refused (PEFT's configuration classes refuse them the same way); one at that type's default
    /// passes (it changes nothing, and resolved recipes of older runs list every key).
    static func set(_ field: RecipeField, _ value: RecipeValue, in recipe: inout Recipe, origin: String,
                    line: Int?) throws {
        if let owner = field.adapterType, owner != recipe.adapter.kind {
            var defaults = Recipe()
            defaults.adapter = AdapterSpec(defaultsOf: owner)
            if value == field.read(defaults) { return }
            let type = recipe.adapter.kind == .none ? AdapterSpec.Kind.none.name : recipe.adapter.kind.rawValue
            throw RecipeError(file: origin, line: line,
                              "\(field.key): \(quoted(value)) configures \(owner.name), but adapter.type is \(type), "
                              + "so it would change nothing; remove it, or set adapter.type: \(owner.rawValue)")
        }
        field.write(&recipe, value)
    }

    /// Dotted keys with their value nodes and lines. Sections are mappings; anything else is a value.
    static func flatten(_ mapping: Node.Mapping, prefix: String, file: String) throws -> [(String, Node, Int?)] {
        var out: [(String, Node, Int?)] = []
        for (k, v) in mapping {
            guard let name = k.scalar?.string, !name.isEmpty else {
                throw RecipeError(file: file, line: k.mark?.line, "keys must be plain names")
            }
            let key = prefix.isEmpty ? name : prefix + "." + name
            if let sub = v.mapping {
                let isSection = RecipeSchema.fields.contains { $0.key.hasPrefix(key + ".") }
                guard isSection else {
                    if RecipeSchema.byKey[key] != nil {
                        throw RecipeError(file: file, line: k.mark?.line,
                                          "\(key): expected \(RecipeSchema.byKey[key]!.kind.expected), got a mapping")
                    }
                    let sections = Array(Set(RecipeSchema.fields.compactMap { $0.key.split(separator: ".").first.map(String.init) })).sorted()
                    let near = closest(key, among: sections).map { " (did you mean '\($0)'?)" } ?? suggestion(for: key)
                    throw RecipeError(file: file, line: k.mark?.line, "unknown section '\(key)'\(near)")
                }
                out += try flatten(sub, prefix: key, file: file)
            } else {
                // A section given a value (`data: train.txt`) is named as a section, not as an unknown key.
                if RecipeSchema.byKey[key] == nil, RecipeSchema.fields.contains(where: { $0.key.hasPrefix(key + ".") }) {
                    let fields = RecipeSchema.fields.map(\.key).filter { $0.hasPrefix(key + ".") }
                    throw RecipeError(file: file, line: k.mark?.line,
                                      "\(key): expected a section of keys (\(fields.prefix(3).joined(separator: ", ")), …), got \(describe(v))")
                }
                out.append((key, v, k.mark?.line))
            }
        }
        return out
    }

    /// A YAML node as the field's type; `fail` builds the error for a wrong type.
    static func convert(_ node: Node, kind: RecipeField.Kind, fail: (String) -> RecipeError) throws -> RecipeValue {
        func scalarText() throws -> String {
            guard let s = node.scalar else { throw fail("expected \(kind.expected), got \(describe(node))") }
            return s.string
        }
        func number(_ text: String) -> Double? {
            guard let d = Double(text.replacingOccurrences(of: "_", with: "")), d.isFinite else { return nil }
            return d
        }
        switch kind {
        case .string:
            guard let s = node.scalar, s.style != .plain || !["null", "~"].contains(s.string) else {
                throw fail("expected \(kind.expected), got \(describe(node))")
            }
            return .string(s.string)
        case .int:
            let t = try scalarText()
            guard let i = Int(t.replacingOccurrences(of: "_", with: "")) else { throw fail("expected \(kind.expected), got '\(t)'") }
            return .int(i)
        case .float:
            let t = try scalarText()
            guard let d = number(t) else { throw fail("expected \(kind.expected), got '\(t)'") }
            return .float(d)
        case .bool:
            let t = try scalarText()
            switch t.lowercased() {
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: throw fail("expected \(kind.expected), got '\(t)'")
            }
        case .choice(let options):
            let t = try scalarText()
            guard options.contains(t) else {
                let near = closest(t, among: options).map { " (did you mean '\($0)'?)" } ?? ""
                throw fail("expected \(kind.expected), got '\(t)'\(near)")
            }
            return .string(t)
        case .stringList:
            if let s = node.scalar { return .strings([s.string]) }
            guard let seq = node.sequence else { throw fail("expected \(kind.expected), got \(describe(node))") }
            return .strings(try seq.map { item in
                guard let s = item.scalar else { throw fail("expected \(kind.expected), got an item \(describe(item))") }
                return s.string
            })
        case .intList:
            if let s = node.scalar, let i = Int(s.string) { return .ints([i]) }
            guard let seq = node.sequence else { throw fail("expected \(kind.expected), got \(describe(node))") }
            return .ints(try seq.map { item in
                guard let t = item.scalar?.string, let i = Int(t) else { throw fail("expected \(kind.expected), got an item \(describe(item))") }
                return i
            })
        case .floatPair:
            guard let seq = node.sequence, seq.count == 2 else { throw fail("expected \(kind.expected), got \(describe(node))") }
            return .floats(try seq.map { item in
                guard let t = item.scalar?.string, let d = number(t) else { throw fail("expected \(kind.expected), got an item \(describe(item))") }
                return d
            })
        }
    }

    static func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s): return "'\(s.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    // MARK: Suggestions

    /// Names other tools (PEFT, torchtune, mlx-lm, transformers) use for Finch's keys.
    static let synonyms: [String: String] = [
        "learning_rate": "optimizer.lr", "lr_scheduler": "optimizer.schedule", "scheduler": "optimizer.schedule",
        "num_warmup_steps": "optimizer.warmup_steps", "warmup": "optimizer.warmup_steps", "clip_grad_norm": "optimizer.max_grad_norm",
        "max_grad_norm": "optimizer.max_grad_norm", "grad_clip": "optimizer.max_grad_norm", "weight_decay": "optimizer.weight_decay",
        "max_steps": "training.steps", "iters": "training.steps", "num_train_epochs": "training.epochs", "epochs": "training.epochs",
        "batch_size": "training.batch_size", "gradient_accumulation_steps": "training.grad_accum",
        "r": "adapter.rank", "lora_rank": "adapter.rank", "lora_alpha": "adapter.alpha", "lora_dropout": "adapter.dropout",
        "target_modules": "adapter.targets", "lora_attn_modules": "adapter.targets", "num_virtual_tokens": "adapter.virtual_tokens",
        "use_rslora": "adapter.rslora", "use_dora": "adapter.dora", "ensure_weight_tying": "adapter.ensure_weight_tying", "modules_to_save": "adapter.modules_to_save", "max_seq_len": "data.seq_len", "max_seq_length": "data.seq_len", "seq_length": "data.seq_len",
        "block_size": "data.seq_len", "train_file": "data.train", "validation_file": "data.validation", "output_dir": "output.dir",
        "save_steps": "checkpoint.every", "save_total_limit": "checkpoint.keep", "eval_steps": "eval.every", "logging_steps": "logging.every",
    ]

    /// " (did you mean 'x'?)" for the closest known key, compared by full path and by last component, or
    /// by the names other tools use.
    static func suggestion(for key: String) -> String {
        let keys = RecipeSchema.fields.map(\.key)
        let leaf = key.split(separator: ".").last.map(String.init) ?? key
        if let known = synonyms.min(by: { distance(leaf, $0.key) < distance(leaf, $1.key) }),
           distance(leaf, known.key) <= max(1, known.key.count / 4) {
            return " (did you mean '\(known.value)'?)"
        }
        var best: (String, Int)?
        for k in keys {
            let kLeaf = k.split(separator: ".").last.map(String.init) ?? k
            let d = min(distance(key, k), distance(leaf, kLeaf) + (k.hasSuffix(leaf) ? 0 : 1))
            if best == nil || d < best!.1 { best = (k, d) }
        }
        guard let (k, d) = best, d <= max(2, leaf.count / 2) else { return "" }
        return " (did you mean '\(k)'?)"
    }

    static func closest(_ word: String, among options: [String]) -> String? {
        let scored = options.map { ($0, distance(word, $0)) }.min { $0.1 < $1.1 }
        guard let (o, d) = scored, d <= max(2, word.count / 2) else { return nil }
        return o
    }

    /// Levenshtein distance.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var row = Array(0...b.count)
        for i in 1...a.count {
            var previous = row[0]
            row[0] = i
            for j in 1...b.count {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return row[b.count]
    }

    // MARK: The resolved recipe

    static func yaml(_ recipe: Recipe) -> String {
        var out = "# The resolved recipe: every key, defaults and overrides applied.\n"
        // A section's lines, and whether any of its keys has a value: a section without one is written as a
        // comment (an empty section would read back as a key without a value).
        var section = "", lines = "", anySet = false
        func closeSection() {
            guard !section.isEmpty else { return }
            out += (anySet ? "\(section):\n" : "# \(section): (not set)\n") + lines
            lines = ""
            anySet = false
        }
        for field in RecipeSchema.fields {
            let parts = field.key.split(separator: ".").map(String.init)
            let value = field.read(recipe)
            if parts.count == 1 {
                if let value { out += "\(parts[0]): \(quoted(value))\n" }
                continue
            }
            if parts[0] != section {
                closeSection()
                section = parts[0]
            }
            if let owner = field.adapterType, owner != recipe.adapter.kind {
                lines += "  # \(parts[1]): (\(owner.rawValue) only)\n"
                continue
            }
            if let value {
                lines += "  \(parts[1]): \(quoted(value))\n"
                anySet = true
            } else {
                lines += "  # \(parts[1]): (not set)\n"
            }
        }
        closeSection()
        return out
    }

    static func quoted(_ v: RecipeValue) -> String {
        if case .string(let s) = v {
            let plain = !s.isEmpty && s.allSatisfy { $0.isLetter || $0.isNumber || "/._-+".contains($0) }
                && Double(s) == nil && !["true", "false", "null", "yes", "no", "~"].contains(s.lowercased())
            return plain ? s : JSONValue.quoted(s)
        }
        if case .strings(let l) = v { return "[" + l.map { quoted(.string($0)) }.joined(separator: ", ") + "]" }
        return v.description
    }

    static func hash(_ text: String) -> String {
        var f = Fingerprint()
        for b in text.utf8 { f.add(b) }
        return f.hex
    }

    /// Keys whose values differ between two recipes.
    public static func changedKeys(_ a: Recipe, _ b: Recipe) -> [String] {
        RecipeSchema.fields.filter { $0.read(a) != $0.read(b) }.map(\.key)
    }

    static func yamlLine(_ error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.line
        default: return nil
        }
    }

    static func yamlProblem(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _): return problem
        default: return "\(error)".split(separator: "\n").first.map(String.init) ?? "syntax error"
        }
    }
}
