import OCRNN
import OCRTensor

/// What loading a state dict found, by key: what the model has that the file lacks, what the file has that the
/// model does not, and tensors whose shapes disagree (those are not loaded).
public struct LoadReport: CustomStringConvertible {
    public var loaded: [String] = []
    public var missing: [String] = []
    public var unexpected: [String] = []
    public var mismatched: [(key: String, file: [Int], model: [Int])] = []

    public var isComplete: Bool { missing.isEmpty && unexpected.isEmpty && mismatched.isEmpty }

    public var description: String {
        var lines = ["loaded \(loaded.count) tensors"]
        if !missing.isEmpty { lines.append("missing keys (\(missing.count)): \(missing.joined(separator: ", "))") }
        if !unexpected.isEmpty {
            lines.append("unexpected keys (\(unexpected.count)): \(unexpected.joined(separator: ", "))")
        }
        for m in mismatched { lines.append("shape mismatch for \(m.key): file \(m.file), model \(m.model)") }
        return lines.joined(separator: "\n")
    }

    /// One line for an error message: the counts, with the first few keys of each kind.
    public var summary: String {
        func firstFew(_ items: [String]) -> String {
            items.prefix(3).joined(separator: ", ") + (items.count > 3 ? ", …" : "")
        }
        var parts = ["loaded \(loaded.count) tensors"]
        if !missing.isEmpty { parts.append("\(missing.count) missing (\(firstFew(missing)))") }
        if !unexpected.isEmpty { parts.append("\(unexpected.count) unexpected (\(firstFew(unexpected)))") }
        if !mismatched.isEmpty {
            parts.append("\(mismatched.count) of other shapes (\(firstFew(mismatched.map { "\($0.key): file \($0.file), model \($0.model)" })))")
        }
        return parts.joined(separator: "; ")
    }
}

extension ParameterStore {
    /// Every parameter and buffer under its mmseg key, in PyTorch `state_dict()` order: float tensors as F32,
    /// num_batches_tracked as a 0-d I64 (as PyTorch stores it).
    public func stateDictWriter(prefix: String = "") -> SafetensorsWriter {
        var writer = SafetensorsWriter()
        for entry in entries {
            switch entry {
            case .parameter(let p): writer.add(prefix + p.name, p.value)
            case .buffer(let b): writer.add(prefix + b.name, b.value)
            case .counter(let c): writer.add(prefix + c.name, int64s: [c.value], shape: [])
            }
        }
        return writer
    }

    public func saveStateDict(to path: String) throws {
        try stateDictWriter().write(to: path)
    }

    /// Copies every tensor of `file` whose key (after stripping `prefix`) and shape match. Keys absent from the file
    /// keep their current values and are reported as missing, so a backbone-only checkpoint initialises the backbone.
    @discardableResult
    public func loadStateDict(from file: SafetensorsFile, prefix: String = "") throws -> LoadReport {
        var report = LoadReport()
        var fileKeys = Set(file.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) })
        for entry in entries {
            let key = entry.name
            guard fileKeys.remove(key) != nil else {
                report.missing.append(key)
                continue
            }
            let stored = try file.entry(prefix + key)
            switch entry {
            case .parameter(let p):
                try copyTensor(file, prefix + key, stored, into: p.value, key: key, report: &report)
            case .buffer(let b):
                try copyTensor(file, prefix + key, stored, into: b.value, key: key, report: &report)
            case .counter(let c):
                guard stored.elementCount == 1 else {
                    report.mismatched.append((key, stored.shape, []))
                    continue
                }
                c.value = try file.int64s(prefix + key)[0]
                report.loaded.append(key)
            }
        }
        report.unexpected = file.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
            .filter { fileKeys.contains($0) }
        return report
    }

    private func copyTensor(_ file: SafetensorsFile, _ name: String, _ stored: SafetensorsEntry, into target: Tensor,
                            key: String, report: inout LoadReport) throws {
        guard stored.shape == target.shape else {
            report.mismatched.append((key, stored.shape, target.shape))
            return
        }
        target.copy(from: try file.tensor(name))
        report.loaded.append(key)
    }

    /// (key, shape, dtype) of every state entry, for comparing layouts by name.
    public var stateLayout: [(name: String, shape: [Int], dtype: String)] {
        entries.map { entry in
            switch entry {
            case .parameter(let p): (p.name, p.shape, "F32")
            case .buffer(let b): (b.name, b.value.shape, "F32")
            case .counter(let c): (c.name, [], "I64")
            }
        }
    }
}
