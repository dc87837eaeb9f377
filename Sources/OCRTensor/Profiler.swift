import Dispatch

/// Wall time per kind of work (conv GEMMs, im2col, batch norm, …) summed over a run, for `ocr-ddp bench --profile`.
/// Off by default, when `begin` is one branch. Times are exclusive: a region nested in another (im2col inside a
/// convolution) is counted once, in its own row. Regions are opened and closed on the training thread only.
///
///     let timing = Profiler.begin(); defer { Profiler.end("Conv2d.forward", timing) }
public enum Profiler {
    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) private static var totals: [String: (nanoseconds: UInt64, calls: Int)] = [:]
    /// Floating-point operations (2 per multiply-add) of the GEMM-shaped work done while enabled: convolutions and
    /// batched matrix products, forward only, so 3× a forward's count is the conventional cost of a training step.
    nonisolated(unsafe) public private(set) static var forwardFlops = 0.0
    /// Time spent in nested regions of each open region, innermost last.
    nonisolated(unsafe) private static var nestedTime: [UInt64] = []

    @inline(__always)
    public static func begin() -> UInt64? {
        guard enabled else { return nil }
        nestedTime.append(0)
        return DispatchTime.now().uptimeNanoseconds
    }

    @inline(__always)
    public static func end(_ name: @autoclosure () -> String, _ start: UInt64?) {
        guard let start else { return }
        let elapsed = DispatchTime.now().uptimeNanoseconds - start
        let nested = nestedTime.removeLast()
        if !nestedTime.isEmpty { nestedTime[nestedTime.count - 1] += elapsed }
        let key = name()
        let previous = totals[key] ?? (0, 0)
        totals[key] = (previous.nanoseconds + elapsed - Swift.min(nested, elapsed), previous.calls + 1)
    }

    @inline(__always)
    public static func countForwardFlops(_ flops: Int) {
        if enabled { forwardFlops += Double(flops) }
    }

    public static func reset() {
        totals = [:]
        forwardFlops = 0
        nestedTime = []
    }

    /// Regions by exclusive time, largest first.
    public static var report: [(name: String, seconds: Double, calls: Int)] {
        totals.map { (name: $0.key, seconds: Double($0.value.nanoseconds) / 1e9, calls: $0.value.calls) }
            .sorted { $0.seconds > $1.seconds }
    }
}
