import FinchTensor

/// A layer or a model: parameters and sub-modules found by reflection, named by dotted paths that match
/// Hugging Face keys (`model.layers.0.self_attn.q_proj.weight`).
///
/// Stored properties are discovered in declaration order: a `Tensor` (or `Tensor?`) is a parameter, a
/// `Module` or `[Module]` a child, and a `@Child` property a child that can be replaced in place (how
/// adapters wrap a Linear). Swift's camelCase property names become snake_case keys: `qProj` → `q_proj`,
/// `ln1` → `ln_1`.
open class Module {
    /// Training mode (dropout on) or evaluation mode; set for a whole tree by `train()` / `eval()`.
    public private(set) var isTraining = true

    public init() {}

    /// Direct children and parameters, in declaration order.
    private func members() -> (parameters: [(String, Tensor)], children: [(String, Module)]) {
        var parameters: [(String, Tensor)] = []
        var children: [(String, Module)] = []
        var mirrors: [Mirror] = []
        var m: Mirror? = Mirror(reflecting: self)
        while let current = m {
            mirrors.insert(current, at: 0)  // superclass properties first
            m = current.superclassMirror
        }
        for mirror in mirrors {
            for child in mirror.children {
                guard var label = child.label else { continue }
                if let slot = child.value as? AnyChildSlot {
                    if label.hasPrefix("_") { label.removeFirst() }
                    children.append((Self.key(label), slot.module))
                } else if let tensor = child.value as? Tensor {
                    parameters.append((Self.key(label), tensor))
                } else if let module = child.value as? Module {
                    children.append((Self.key(label), module))
                } else if let list = child.value as? [Module] {
                    for (i, module) in list.enumerated() { children.append(("\(Self.key(label)).\(i)", module)) }
                }
            }
        }
        return (parameters, children)
    }

    /// Every parameter of this tree with its dotted name.
    public func namedParameters() -> [(name: String, tensor: Tensor)] {
        var out: [(name: String, tensor: Tensor)] = []
        var stack: [(prefix: String, module: Module)] = [("", self)]
        while let (prefix, module) = stack.popLast() {
            let (parameters, children) = module.members()
            for (name, tensor) in parameters { out.append((prefix + name, tensor)) }
            for (name, child) in children.reversed() { stack.append((prefix + name + ".", child)) }
        }
        // Tied weights appear once, under their first name.
        var seen = Set<ObjectIdentifier>()
        return out.filter { seen.insert(ObjectIdentifier($0.tensor)).inserted }
    }

    /// Every module of this tree (itself first, as ""), with its dotted name.
    public func namedModules() -> [(name: String, module: Module)] {
        var out: [(name: String, module: Module)] = []
        var stack: [(name: String, module: Module)] = [("", self)]
        while let (name, module) = stack.popLast() {
            out.append((name, module))
            for (childName, child) in module.members().children.reversed() {
                stack.append((name.isEmpty ? childName : name + "." + childName, child))
            }
        }
        return out
    }

    /// The module at a dotted path ("" is this one), found by walking down from here one level at a time
    /// rather than listing the whole tree.
    public func module(at path: String) -> Module? {
        var module: Module = self
        var rest = Substring(path)
        while !rest.isEmpty {
            guard let (name, child) = module.members().children.first(where: { rest == $0.0 || rest.hasPrefix($0.0 + ".") }) else {
                return nil
            }
            module = child
            rest = rest.dropFirst(name.count)
            if rest.first == "." { rest = rest.dropFirst() }
        }
        return module
    }

    /// The parameters that will receive gradients.
    public func trainableParameters() -> [(name: String, tensor: Tensor)] {
        namedParameters().filter { $0.tensor.requiresGrad }
    }

    /// Marks every parameter of this tree as frozen (no gradient buffers, no optimizer state).
    public func freeze() { for p in namedParameters() { p.tensor.requiresGrad = false } }

    /// Marks every parameter of this tree as trainable.
    public func unfreeze() { for p in namedParameters() { p.tensor.requiresGrad = true } }

    public func train() { for m in namedModules() { m.module.isTraining = true } }
    public func eval() { for m in namedModules() { m.module.isTraining = false } }

    /// Replaces the `@Child` sub-module at a dotted path.
    /// - Throws: when no replaceable child has that path, or the new module has the wrong type.
    public func replaceModule(at path: String, with replacement: Module) throws {
        let parts = path.split(separator: ".").map(String.init)
        guard let last = parts.last else { throw ModuleError.noSuchModule(path) }
        let parentPath = parts.dropLast().joined(separator: ".")
        guard let parent = module(at: parentPath) else {
            throw ModuleError.noSuchModule(path)
        }
        var mirror: Mirror? = Mirror(reflecting: parent)
        while let m = mirror {
            for child in m.children {
                guard var label = child.label, let slot = child.value as? AnyChildSlot else { continue }
                if label.hasPrefix("_") { label.removeFirst() }
                if Self.key(label) == last {
                    try slot.replace(with: replacement, path: path)
                    return
                }
            }
            mirror = m.superclassMirror
        }
        throw ModuleError.noSuchModule(path)
    }

    /// camelCase → snake_case, with an underscore before a digit run: `postAttentionLayernorm` →
    /// `post_attention_layernorm`, `ln1` → `ln_1`. A letter right after an underscore is kept as written,
    /// so `lora_A` stays `lora_A` (PEFT's key).
    static func key(_ label: String) -> String {
        var out = ""
        var previous: Character?
        for c in label {
            if c.isUppercase && previous != "_" {
                if !out.isEmpty { out.append("_") }
                out.append(contentsOf: c.lowercased())
            } else if c.isNumber, let p = previous, !p.isNumber, p != "_" {
                out.append("_")
                out.append(c)
            } else {
                out.append(c)
            }
            previous = c
        }
        return out
    }
}

public enum ModuleError: Error, CustomStringConvertible, Equatable {
    case noSuchModule(String)
    case wrongType(path: String, expected: String, got: String)

    public var description: String {
        switch self {
        case .noSuchModule(let path): return "no replaceable module at '\(path)'"
        case let .wrongType(path, expected, got): return "module at '\(path)' must be \(expected), got \(got)"
        }
    }
}

/// Type-erased access to a `@Child` slot.
protocol AnyChildSlot: AnyObject {
    var module: Module { get }
    func replace(with module: Module, path: String) throws
}

/// A sub-module that can be swapped in place (a Linear wrapped by a LoRA adapter, say).
@propertyWrapper
public final class Child<Value>: AnyChildSlot {
    public var wrappedValue: Value

    public init(wrappedValue: Value) {
        precondition(wrappedValue is Module, "@Child holds modules only")
        self.wrappedValue = wrappedValue
    }

    var module: Module { wrappedValue as! Module }

    func replace(with module: Module, path: String) throws {
        guard let value = module as? Value else {
            throw ModuleError.wrongType(path: path, expected: "\(Value.self)", got: "\(type(of: module))")
        }
        wrappedValue = value
    }
}
