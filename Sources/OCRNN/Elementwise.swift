import OCRTensor

/// y = max(x, 0). x: any shape → y: same shape. Backward masks with y > 0 (the output, so it works in place).
public final class ReLU {
    private var output: Tensor?
    public init() {}

    public func forward(_ x: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("ReLU.forward", timing) }
        let y = Tensor.reuse(&output, shape: x.shape)
        for i in 0..<x.count { y.data[i] = Swift.max(x.data[i], 0) }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("ReLU.backward", timing) }
        guard let y = output else { preconditionFailure("ReLU backward before forward") }
        let dx = Tensor.transient(shape: y.shape)
        reluBackward(output: y, dy, into: dx)
        return dx
    }
}

/// A layer that ends in a ReLU and whose backward reads only its output's sign, so that in bf16 training the output
/// may be kept as bf16 bits once its fp32 readers are done (`BF16Activation`).
public protocol KeepsOutputInBF16: AnyObject {
    func keepOutput(_ bits: BF16Activation)
}

/// y = max(Σ terms, 0): the residual join of a ResNet block (a + b), and the fused sum of an HR module's output
/// (one term per branch). Terms of one shape → y; backward gives the one gradient every term receives.
public final class ResidualAddReLU: KeepsOutputInBF16 {
    /// The output, for the backward's mask: fp32, or as bf16 bits once `keepOutput` replaced it.
    private var output: Tensor?
    private var outputBits: BF16Activation?
    public init() {}

    public func forward(_ a: Tensor, _ b: Tensor) -> Tensor { forward([a, b]) }

    public func forward(_ terms: [Tensor]) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("ResidualAddReLU.forward", timing) }
        for t in terms { precondition(t.shape == terms[0].shape, "residual add of \(t.shape) and \(terms[0].shape)") }
        let y = Tensor.transient(shape: terms[0].shape)
        output = y
        outputBits = nil
        let py = y.data
        let sources = terms.map { UnsafePointer($0.data) }
        parallelChunks(y.count, minimumPerChunk: 1 << 16) { s, e in
            if sources.count == 2 {
                let (pa, pb) = (sources[0], sources[1])
                for i in s..<e { py[i] = Swift.max(pa[i] + pb[i], 0) }
                return
            }
            (py + s).update(from: sources[0] + s, count: e - s)
            for source in sources.dropFirst() { for i in s..<e { py[i] += source[i] } }
            for i in s..<e { py[i] = Swift.max(py[i], 0) }
        }
        return y
    }

    /// Keeps the last forward's output as `bits` instead of fp32: backward reads only its sign.
    public func keepOutput(_ bits: BF16Activation) {
        precondition(bits.shape == output?.shape, "residual join: bf16 output kept for an unkept output")
        output = nil
        outputBits = bits
    }

    public func backward(_ dy: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("ResidualAddReLU.backward", timing) }
        guard let shape = output?.shape ?? outputBits?.shape,
              let y = output.map(ActivationPlane.init) ?? outputBits.map(ActivationPlane.init) else {
            preconditionFailure("residual backward before forward")
        }
        defer { (output, outputBits) = (nil, nil) }   // saved for this backward alone (`Tensor.transient`)
        precondition(dy.shape == shape, "residual join: gradient \(dy.shape) for output \(shape)")
        let dx = Tensor.transient(shape: shape)
        reluBackward(output: y, dy, into: dx)
        return dx
    }
}

/// dx = dy where the ReLU's output y > 0, else 0 (the backward of any op that ends in a ReLU).
public func reluBackward(output y: Tensor, _ dy: Tensor, into dx: Tensor) {
    precondition(dy.count == y.count && dx.count == y.count, "ReLU gradient \(dy.shape) for output \(y.shape)")
    reluBackward(output: ActivationPlane(y), dy, into: dx)
}

/// The same with y an fp32 or kept bf16 activation of dy's size.
public func reluBackward(output y: ActivationPlane, _ dy: Tensor, into dx: Tensor) {
    precondition(dx.count == dy.count, "ReLU gradient \(dy.shape) into \(dx.shape)")
    let (pd, pg) = (dx.data, dy.data)
    parallelChunks(dy.count, minimumPerChunk: 1 << 16) { s, e in
        // dy is read whatever the mask, so the loop is a select that vectorises (a load on one branch only is a
        // data-dependent branch per element: 4.3× slower, measured on R18-D8's residual ReLUs).
        PlaneSums.forEach(count: e - s, lanes: { j in
            let i = s + j
            PlaneSums.store(PlaneSums.load(pg + i).replacing(with: 0, where: .!(y.lanes(i) .> 0)), pd + i)
        }, single: { j in
            let g = pg[s + j]
            pd[s + j] = y[s + j] > 0 ? g : 0
        })
    }
}

/// a += b elementwise (gradient sums where a tensor feeds several consumers).
public func addInPlace(_ a: Tensor, _ b: Tensor) {
    precondition(a.count == b.count, "adding \(b.shape) into \(a.shape)")
    let (pa, pb) = (a.data, b.data)
    parallelChunks(a.count, minimumPerChunk: 1 << 16) { s, e in
        for i in s..<e { pa[i] += pb[i] }
    }
}

/// Concatenation along channels. [N×C_i×H×W] → N×ΣC_i×H×W; backward splits the gradient back.
public final class ChannelConcat {
    private var channelCounts: [Int] = []
    public init() {}

    public func forward(_ parts: [Tensor]) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("ChannelConcat.forward", timing) }
        let first = parts[0]
        let (n, h, w) = (first.shape[0], first.shape[2], first.shape[3])
        for p in parts {
            precondition(p.shape[0] == n && p.shape[2] == h && p.shape[3] == w,
                         "concat of \(p.shape) with \(first.shape)")
        }
        channelCounts = parts.map { $0.shape[1] }
        let total = channelCounts.reduce(0, +)
        let y = Tensor.transient(shape: [n, total, h, w])
        let hw = h * w
        for i in 0..<n {
            var channel = 0
            for p in parts {
                let block = p.shape[1] * hw
                (y.data + (i * total + channel) * hw).update(from: p.data + i * block, count: block)
                channel += p.shape[1]
            }
        }
        return y
    }

    public func backward(_ dy: Tensor) -> [Tensor] {
        let timing = Profiler.begin(); defer { Profiler.end("ChannelConcat.backward", timing) }
        let (n, total, hw) = (dy.shape[0], dy.shape[1], dy.shape[2] * dy.shape[3])
        var result: [Tensor] = []
        var channel = 0
        for c in channelCounts {
            let d = Tensor.transient(shape: [n, c, dy.shape[2], dy.shape[3]])
            for i in 0..<n {
                d.data.advanced(by: i * c * hw).update(from: dy.data + (i * total + channel) * hw, count: c * hw)
            }
            result.append(d)
            channel += c
        }
        return result
    }
}

/// Dropout2d: zeroes whole channels with probability p and scales the kept ones by 1/(1−p), in training only.
/// x: N×C×H×W → y: same. Sample i's C channel masks are drawn from (seed, sampleKeys[i]): a key names the sample's
/// place in the run (its global stream position), so a mask does not depend on which rank or micro-batch holds the
/// sample, and a resumed run draws what the uninterrupted one would.
public final class Dropout2d {
    public let probability: Float
    public let seed: UInt64
    private let store: ParameterStore
    private var mask: [Float] = []
    private var active = false

    public init(_ scope: Scope, probability: Float, seed: UInt64) {
        precondition(probability >= 0 && probability < 1, "dropout probability \(probability) outside [0, 1)")
        self.probability = probability
        self.seed = seed
        self.store = scope.store
    }

    public func forward(_ x: Tensor, sampleKeys: [UInt64]) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("Dropout2d.forward", timing) }
        active = store.training && probability > 0
        guard active else { return x }
        let (n, channels, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        precondition(sampleKeys.count == n, "\(sampleKeys.count) sample keys for a batch of \(n)")
        let scale = 1 / (1 - probability)
        mask = sampleKeys.flatMap { key in
            var rng = SplitMix64(seed: seed, key)
            return (0..<channels).map { _ in rng.uniform() < Double(probability) ? 0 : scale }
        }
        let y = Tensor.transient(shape: x.shape)
        for p in 0..<n * channels {
            let m = mask[p]
            for j in 0..<hw { y.data[p * hw + j] = x.data[p * hw + j] * m }
        }
        return y
    }

    public func backward(_ dy: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("Dropout2d.backward", timing) }
        guard active else { return dy }
        let (planes, hw) = (dy.shape[0] * dy.shape[1], dy.shape[2] * dy.shape[3])
        let dx = Tensor.transient(shape: dy.shape)
        for p in 0..<planes {
            let m = mask[p]
            for j in 0..<hw { dx.data[p * hw + j] = dy.data[p * hw + j] * m }
        }
        return dx
    }
}
