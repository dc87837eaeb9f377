import Foundation
import OCRTensor

/// The committed golden data written by Tools/make_golden.py.
public enum Fixtures {
    public static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    public static func file(_ relativePath: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: directory.appendingPathComponent(relativePath).path)
    }

    public static func url(_ relativePath: String) -> URL { directory.appendingPathComponent(relativePath) }
}

/// How far a tensor is from its reference: max |a − e| over max |e| (the "relative" of docs/TESTING.md), where it
/// happens, and the relative Frobenius norm ‖a − e‖ / ‖e‖.
public struct Comparison: CustomStringConvertible {
    public let name: String
    public let maxAbsDiff: Double
    public let worstIndex: [Int]
    public let actualAtWorst: Float
    public let expectedAtWorst: Float
    public let referenceScale: Double
    public let relativeNorm: Double

    public var relativeMax: Double { maxAbsDiff / max(referenceScale, 1e-30) }

    public var description: String {
        String(format: "%@: max|diff| %.3e at %@ (got %.6g, want %.6g), relative %.3e, norm-relative %.3e",
               name, maxAbsDiff, "\(worstIndex)", actualAtWorst, expectedAtWorst, relativeMax, relativeNorm)
    }
}

public func compare(_ name: String, _ actual: Tensor, _ expected: Tensor) -> Comparison {
    precondition(actual.count == expected.count, "\(name): \(actual.shape) vs reference \(expected.shape)")
    var worst = 0, maxDiff = 0.0, scale = 0.0, diffSq = 0.0, refSq = 0.0
    for i in 0..<actual.count {
        let (a, e) = (Double(actual[i]), Double(expected[i]))
        let d = abs(a - e)
        if d > maxDiff || d.isNaN { maxDiff = d.isNaN ? .infinity : d; worst = i }
        scale = max(scale, abs(e))
        diffSq += (a - e) * (a - e); refSq += e * e
    }
    var index: [Int] = []
    var rest = worst
    for d in expected.shape.reversed() { index.insert(rest % max(d, 1), at: 0); rest /= max(d, 1) }
    return Comparison(name: name, maxAbsDiff: maxDiff, worstIndex: index,
                      actualAtWorst: actual.count > 0 ? actual[worst] : 0,
                      expectedAtWorst: expected.count > 0 ? expected[worst] : 0,
                      referenceScale: scale, relativeNorm: refSq > 0 ? (diffSq / refSq).squareRoot() : diffSq.squareRoot())
}

/// Two state-dict files compared tensor by tensor: the float tensor whose largest difference is worst relative to
/// max(max |reference|, 0.01) (tensors near zero, e.g. biases that moved by 1e-4 from 0, are judged against a typical
/// weight scale, not their own rounding noise), and the names of integer tensors (counters) that differ.
public struct StateDictDifference: CustomStringConvertible {
    public let worst: Comparison?
    public let differingCounters: [String]
    public let names: (actual: [String], expected: [String])

    public var worstRelative: Double { worst.map { $0.maxAbsDiff / max($0.referenceScale, 0.01) } ?? 0 }
    public var description: String {
        "worst \(worst.map(\.description) ?? "none") (floored relative \(worstRelative))"
            + (differingCounters.isEmpty ? "" : ", counters differ: \(differingCounters)")
    }

    public init(_ actual: String, _ expected: String, only include: (String) -> Bool = { _ in true }) throws {
        let (fa, fb) = (try SafetensorsFile(path: actual), try SafetensorsFile(path: expected))
        names = (fa.names, fb.names)
        var worst: Comparison?, counters: [String] = []
        for name in fb.names where include(name) {
            if try fb.entry(name).dtype == .i64 {
                if try fa.int64s(name) != fb.int64s(name) { counters.append(name) }
                continue
            }
            let c = compare(name, try fa.tensor(name), try fb.tensor(name))
            let floored = { (c: Comparison) in c.maxAbsDiff / max(c.referenceScale, 0.01) }
            if worst == nil || floored(c) > floored(worst!) { worst = c }
        }
        self.worst = worst
        differingCounters = counters
    }
}

/// How far one step's weight update (actual − start) is from the expected one (expected − start), tensor by
/// tensor as ‖Δactual − Δexpected‖ / ‖Δexpected‖; batch-norm running statistics and counters are not updates.
public struct UpdateDifference: CustomStringConvertible {
    public let worst: Double
    public let worstName: String
    public let median: Double
    public var description: String { "worst update error \(worst) at \(worstName), median \(median)" }

    public init(start: String, expected: String, actual: String) throws {
        let (s, e, a) = (try SafetensorsFile(path: start), try SafetensorsFile(path: expected), try SafetensorsFile(path: actual))
        var errors: [(Double, String)] = []
        for name in e.names where try e.entry(name).dtype != .i64 && !name.contains("running_") {
            let (ts, te, ta) = (try s.tensor(name), try e.tensor(name), try a.tensor(name))
            var update = 0.0, error = 0.0
            for i in 0..<te.count {
                let d = Double(te[i]) - Double(ts[i])
                update += d * d
                error += (Double(ta[i]) - Double(ts[i]) - d) * (Double(ta[i]) - Double(ts[i]) - d)
            }
            if update > 0 || error > 0 { errors.append((update > 0 ? (error / update).squareRoot() : .infinity, name)) }
        }
        errors.sort { $0.0 < $1.0 }
        (worst, worstName) = errors.last ?? (0, "none")
        median = errors.isEmpty ? 0 : errors[errors.count / 2].0
    }
}

/// Random tensor with entries uniform in [lo, hi).
public func randomTensor(_ shape: [Int], seed: UInt64, lo: Float = -1, hi: Float = 1) -> Tensor {
    var rng = SplitMix64(seed: seed)
    let t = Tensor(zeros: shape)
    for i in 0..<t.count { t[i] = lo + (hi - lo) * Float(rng.uniform()) }
    return t
}

/// Σ y·r in double: the scalar whose gradient w.r.t. y is r.
public func dot(_ y: Tensor, _ r: Tensor) -> Double {
    var s = 0.0
    for i in 0..<y.count { s += Double(y[i]) * Double(r[i]) }
    return s
}

/// One coordinate where the analytic and the central-difference gradient disagree beyond tolerance.
public struct GradientMismatch: CustomStringConvertible {
    public let name: String, index: Int, analytic: Double, numeric: Double
    public var description: String {
        String(format: "%@[%d]: analytic %.6g, finite difference %.6g", name, index, analytic, numeric)
    }
}

/// Central differences (L(v+h) − L(v−h)) / 2h at `samples` coordinates of `variable` (all if fewer), compared to
/// `analytic`: a mismatch is |a − n| > tolerance·max(|a|, |n|, floor), with `floor` = the gradient's largest entry
/// times 0.1 so near-zero entries are judged on the tensor's scale.
public func finiteDifferenceMismatches(
    _ name: String, variable: Tensor, analytic: Tensor, samples: Int = 24, step: Float = 1e-2,
    tolerance: Double = 2e-2, seed: UInt64 = 99, loss: () -> Double
) -> [GradientMismatch] {
    precondition(variable.count == analytic.count)
    var rng = SplitMix64(seed: seed)
    let indices = variable.count <= samples
        ? Array(0..<variable.count) : (0..<samples).map { _ in Int(rng.next() % UInt64(variable.count)) }
    var largest = 0.0
    for i in 0..<analytic.count { largest = max(largest, abs(Double(analytic[i]))) }
    var mismatches: [GradientMismatch] = []
    for i in indices {
        let original = variable[i]
        variable[i] = original + step
        let up = loss()
        variable[i] = original - step
        let down = loss()
        variable[i] = original
        let numeric = (up - down) / (2 * Double(step))
        let a = Double(analytic[i])
        if abs(a - numeric) > tolerance * max(abs(a), abs(numeric), 0.1 * largest) {
            mismatches.append(GradientMismatch(name: name, index: i, analytic: a, numeric: numeric))
        }
    }
    return mismatches
}

/// A fresh directory under the system's temporary directory, for one test's files.
public func makeTemporaryDirectory(_ prefix: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
