import Foundation
import Yams

/// A parsed YAML config: ordered maps, lists and typed scalars, addressed by dotted key paths in which list items
/// are numbered (`model.decode_head.1.dropout_ratio`), as mmseg's `--cfg-options` does.
public indirect enum ConfigValue: Equatable {
    case map([ConfigEntry])
    case list([ConfigValue])
    case int(Int)
    case double(Double)
    case bool(Bool)
    case string(String)
    case null

    public init(yaml text: String, source: String) throws {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw ConfigError("\(source): not valid YAML (\(error))")
        }
        self = node.map(ConfigValue.init(node:)) ?? .map([])
    }

    init(node: Node) {
        switch node {
        case .mapping(let m):
            self = .map(m.map { ConfigEntry(key: $0.key.string ?? "\($0.key)", value: ConfigValue(node: $0.value)) })
        case .sequence(let s):
            self = .list(s.map(ConfigValue.init(node:)))
        case .scalar(let scalar) where scalar.string.contains(":"):
            // YAML 1.1's sexagesimal numbers ("1:30" = 90) are strings here, as in YAML 1.2: Yams multiplies their
            // parts without overflow checks and traps on a long one (found by fuzz-config).
            self = .string(scalar.string)
        case .scalar:
            if node.null != nil { self = .null }
            else if let b = node.bool { self = .bool(b) }
            else if let i = node.int { self = .int(i) }
            else if let d = node.float { self = .double(d) }
            else { self = .string(node.string ?? "") }
        case .alias:
            self = .null
        }
    }

    /// The value at `path` (nil when absent).
    public subscript(path: [String]) -> ConfigValue? {
        guard let head = path.first else { return self }
        switch self {
        case .map(let entries): return entries.first { $0.key == head }?.value[Array(path.dropFirst())]
        case .list(let items):
            guard let i = Int(head), items.indices.contains(i) else { return nil }
            return items[i][Array(path.dropFirst())]
        default: return nil
        }
    }

    /// Sets the value at `path`, creating map entries as needed; a list index must exist.
    public mutating func set(_ path: [String], to value: ConfigValue, fullPath: String) throws {
        guard let head = path.first else { self = value; return }
        let rest = Array(path.dropFirst())
        switch self {
        case .map(var entries):
            if let i = entries.firstIndex(where: { $0.key == head }) {
                try entries[i].value.set(rest, to: value, fullPath: fullPath)
            } else {
                var fresh = ConfigValue.map([])
                try fresh.set(rest, to: value, fullPath: fullPath)
                entries.append(ConfigEntry(key: head, value: fresh))
            }
            self = .map(entries)
        case .list(var items):
            guard let i = Int(head), items.indices.contains(i) else {
                throw ConfigError("config key '\(fullPath)': '\(head)' is not an index of a list of \(items.count)")
            }
            try items[i].set(rest, to: value, fullPath: fullPath)
            self = .list(items)
        case .null:
            self = .map([])
            try set(path, to: value, fullPath: fullPath)
        default:
            throw ConfigError("config key '\(fullPath)': cannot go into '\(head)' of a scalar")
        }
    }

    /// Every leaf key path (maps and lists descended), for the unknown-key check.
    var leafPaths: [String] {
        func walk(_ v: ConfigValue, _ prefix: String, _ out: inout [String]) {
            switch v {
            case .map(let entries) where !entries.isEmpty:
                for e in entries { walk(e.value, prefix.isEmpty ? e.key : "\(prefix).\(e.key)", &out) }
            case .list(let items) where !items.isEmpty:
                for (i, item) in items.enumerated() { walk(item, "\(prefix).\(i)", &out) }
            default:
                out.append(prefix)
            }
        }
        var out: [String] = []
        walk(self, "", &out)
        return out
    }

    /// Plain Swift values ([String: Any], [Any], Int, Double, Bool, String, NSNull) for code that takes them.
    public var plain: Any {
        switch self {
        case .map(let entries): return Dictionary(entries.map { ($0.key, $0.value.plain) }, uniquingKeysWith: { $1 })
        case .list(let items): return items.map(\.plain)
        case .int(let i): return i
        case .double(let d): return d
        case .bool(let b): return b
        case .string(let s): return s
        case .null: return NSNull()
        }
    }

    /// One line of YAML flow style, for error messages: `[1, 1, 2, 4]`, `{type: BN}`.
    public var inline: String {
        switch self {
        case .map(let entries): return "{" + entries.map { "\($0.key): \($0.value.inline)" }.joined(separator: ", ") + "}"
        case .list(let items): return "[" + items.map(\.inline).joined(separator: ", ") + "]"
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .bool(let b): return b ? "true" : "false"
        case .string(let s): return "'\(s)'"
        case .null: return "null"
        }
    }

    /// YAML text of this value (block style, keys in order).
    public var yaml: String {
        func node(_ v: ConfigValue) -> Node {
            switch v {
            case .map(let entries): return .mapping(Node.Mapping(entries.map { (Node($0.key), node($0.value)) }))
            case .list(let items): return .sequence(Node.Sequence(items.map(node)))
            case .int(let i): return Node(String(i), Tag(.int))
            case .double(let d): return Node(String(d), Tag(.float))
            case .bool(let b): return Node(b ? "true" : "false", Tag(.bool))
            case .string(let s): return Node(s, Tag(.str), .doubleQuoted)
            case .null: return Node("null", Tag(.null))
            }
        }
        return (try? Yams.serialize(node: node(self))) ?? ""
    }
}

public struct ConfigEntry: Equatable {
    public var key: String
    public var value: ConfigValue
}

public struct ConfigError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reads typed values out of a config tree by key path, remembering what was read, so that whatever was never read
/// can be reported as an unknown key (a typo must not be silently ignored).
public final class ConfigReader {
    public let root: ConfigValue
    private var consumed: Set<String> = []

    public init(_ root: ConfigValue) { self.root = root }

    func value(_ path: String) -> ConfigValue? {
        consumed.insert(path)
        let v = root[path.split(separator: ".").map(String.init)]
        if case .null = v { return nil }
        return v
    }

    func has(_ path: String) -> Bool { root[path.split(separator: ".").map(String.init)] != nil }

    private func mismatch(_ path: String, _ expected: String, _ got: ConfigValue) -> ConfigError {
        ConfigError("config key '\(path)': expected \(expected), got \(got.inline)")
    }

    public func int(_ path: String, default fallback: Int) throws -> Int {
        guard let v = value(path) else { return fallback }
        guard case .int(let i) = v else { throw mismatch(path, "an integer", v) }
        return i
    }

    public func double(_ path: String, default fallback: Double) throws -> Double {
        guard let v = value(path) else { return fallback }
        switch v {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: throw mismatch(path, "a number", v)
        }
    }

    public func bool(_ path: String, default fallback: Bool) throws -> Bool {
        guard let v = value(path) else { return fallback }
        guard case .bool(let b) = v else { throw mismatch(path, "true or false", v) }
        return b
    }

    public func string(_ path: String, default fallback: String) throws -> String {
        guard let v = value(path) else { return fallback }
        guard case .string(let s) = v else { throw mismatch(path, "a string", v) }
        return s
    }

    public func doubles(_ path: String, default fallback: [Double]?) throws -> [Double]? {
        guard let v = value(path) else { return fallback }
        guard case .list(let items) = v else { throw mismatch(path, "a list of numbers", v) }
        return try items.enumerated().map { i, item in
            switch item {
            case .int(let n): return Double(n)
            case .double(let d): return d
            default: throw mismatch("\(path).\(i)", "a number", item)
            }
        }
    }

    public func ints(_ path: String, default fallback: [Int]) throws -> [Int] {
        guard let v = value(path) else { return fallback }
        guard case .list(let items) = v else { throw mismatch(path, "a list of integers", v) }
        return try items.enumerated().map { i, item in
            guard case .int(let n) = item else { throw mismatch("\(path).\(i)", "an integer", item) }
            return n
        }
    }

    /// An mmseg key whose one value is what this implementation computes: absent or `expected` passes, anything else
    /// is an error naming the key and saying what is supported.
    public func require(_ path: String, equals expected: ConfigValue, _ what: String) throws {
        guard let v = value(path), v != expected else { return }
        throw mismatch(path, what, v)
    }

    /// A whole subtree taken as it is (e.g. a transform pipeline, validated by its consumer).
    public func subtree(_ path: String) -> ConfigValue? { value(path) }

    public func count(_ path: String) -> Int {
        if case .list(let items)? = root[path.split(separator: ".").map(String.init)] { return items.count }
        return 0
    }

    /// Leaf keys of the tree that nothing read (neither the key nor an enclosing subtree).
    public var unknownKeys: [String] {
        root.leafPaths.filter { leaf in
            !leaf.isEmpty && !consumed.contains { leaf == $0 || leaf.hasPrefix($0 + ".") }
        }
    }
}
