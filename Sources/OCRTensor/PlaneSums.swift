/// Sums over one contiguous run of floats (a channel plane of one image) that are both vectorised and reproducible:
/// 16 float lanes accumulate within blocks of `blockLength` elements and each block's lanes are added in double.
/// The order depends on the run alone, so a plane gives the same bits whatever else is in the batch — what keeps a
/// batch split over ranks exact — while a float lane never sums more than 64 values (relative error ~1e-6 at worst,
/// against the double total's ~1e-16).
public enum PlaneSums {
    public typealias Lanes = SIMD16<Float>
    static let blockLength = 1024

    @inline(__always)
    public static func load(_ p: UnsafePointer<Float>) -> Lanes {
        UnsafeRawPointer(p).loadUnaligned(as: Lanes.self)
    }

    @inline(__always)
    public static func store(_ v: Lanes, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Lanes.self)
    }

    /// (Σ a(i), Σ b(i)) over 0..<count, with `lanes(i)` giving both terms for elements i..<i+16 and `single(i)`
    /// both terms for the element i (the tail).
    @inline(__always)
    public static func pair(count: Int, lanes: (Int) -> (Lanes, Lanes), single: (Int) -> (Float, Float))
        -> (Double, Double) {
        var (totalA, totalB) = (0.0, 0.0)
        let vectorEnd = count - count % Lanes.scalarCount
        var i = 0
        while i < vectorEnd {
            let blockEnd = Swift.min(vectorEnd, i + blockLength)
            var (accA, accB) = (Lanes(), Lanes())
            while i < blockEnd {
                let (a, b) = lanes(i)
                accA += a
                accB += b
                i += Lanes.scalarCount
            }
            for l in 0..<Lanes.scalarCount {
                totalA += Double(accA[l])
                totalB += Double(accB[l])
            }
        }
        while i < count {
            let (a, b) = single(i)
            totalA += Double(a)
            totalB += Double(b)
            i += 1
        }
        return (totalA, totalB)
    }

    /// Runs `lanes(i)` for i = 0, 16, 32, … while 16 elements remain, then `single(i)` for the tail: elementwise
    /// kernels written once for both widths.
    @inline(__always)
    public static func forEach(count: Int, lanes: (Int) -> Void, single: (Int) -> Void) {
        let vectorEnd = count - count % Lanes.scalarCount
        var i = 0
        while i < vectorEnd { lanes(i); i += Lanes.scalarCount }
        while i < count { single(i); i += 1 }
    }

    /// Σ x over `count` elements.
    public static func sum(_ x: UnsafePointer<Float>, count: Int) -> Double {
        pair(count: count, lanes: { (load(x + $0), Lanes()) }, single: { (x[$0], 0) }).0
    }

    /// Σ (x − mean)² over `count` elements.
    public static func squaredDeviations(_ x: UnsafePointer<Float>, count: Int, mean: Float) -> Double {
        pair(count: count, lanes: { i in
            let d = load(x + i) - mean
            return (d * d, Lanes())
        }, single: { i in
            let d = x[i] - mean
            return (d * d, 0)
        }).0
    }
}
