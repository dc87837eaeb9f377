import Foundation
import OCRTensor

/// Batch normalisation over N, H, W per channel, optionally followed by ReLU in the same pass.
/// x: N×C×H×W → y: N×C×H×W.
///
/// Training: normalise with the biased variance M2/N of the batch (merged across replicas through the store's
/// `ReplicaReducer`), update running_mean and running_var (unbiased M2/(N−1)) with momentum 0.1 and count
/// num_batches_tracked. Eval: normalise with the running statistics.
public final class BatchNorm2d: KeepsOutputInBF16 {
    public let weight: Parameter
    /// The layer's mmseg key prefix ("backbone.layer1.0.bn1"), for messages; kept, not rebuilt every step.
    let layerName: String
    public let bias: Parameter
    public let runningMean: Buffer
    public let runningVar: Buffer
    public let numBatchesTracked: Counter
    public let channels: Int
    public let eps: Double = 1e-5
    public let momentum: Double = 0.1
    /// y = max(BN(x), 0); backward masks with y > 0 before the BN backward.
    public let fusedReLU: Bool

    private let store: ParameterStore
    /// The input, for backward's x − μ: fp32, or where the store keeps activations in bf16, its values rounded to
    /// bf16 bits once the forward has normalised it in fp32. Statistics and normalisation stay fp32; backward then
    /// centres rounded values, as PyTorch's bf16 autocast, whose convolutions output bf16, does throughout.
    private var input: Tensor?
    private var inputBits: BF16Activation?
    /// The output, kept only with the fused ReLU (backward masks with it), fp32 or as bf16 bits (`keepOutput`);
    /// without ReLU nothing keeps it, and it goes as soon as its consumer (a residual join) is done with it.
    private var output: Tensor?
    private var outputBits: BF16Activation?
    /// Statistics the last forward normalised with, per channel, and the global element count behind them.
    private var mean: [Double]
    private var invStd: [Double]
    /// The batch's unbiased variance M2/(N−1), what the running variance moves towards.
    private var unbiasedVariance: [Double]
    private var globalCount = 0.0
    private var usedBatchStatistics = true

    public init(_ scope: Scope, channels: Int, relu: Bool = false, weightInit: Float = 1) {
        self.channels = channels
        self.fusedReLU = relu
        self.store = scope.store
        weight = scope.parameter("weight", shape: [channels], initializer: .constant(weightInit))
        layerName = String(weight.name.dropLast(".weight".count))
        bias = scope.parameter("bias", shape: [channels], initializer: .constant(0))
        runningMean = scope.buffer("running_mean", shape: [channels])
        runningVar = scope.buffer("running_var", shape: [channels])
        runningVar.value.fill(1)
        numBatchesTracked = scope.counter("num_batches_tracked")
        mean = Array(repeating: 0, count: channels)
        invStd = Array(repeating: 1, count: channels)
        unbiasedVariance = Array(repeating: 1, count: channels)
    }

    public func forward(_ x: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("BatchNorm2d.forward", timing) }
        precondition(x.shape.count == 4 && x.shape[1] == channels,
                     "\(weight.name): input \(x.shape) does not have \(channels) channels")
        let (n, hw) = (x.shape[0], x.shape[2] * x.shape[3])
        input = x
        usedBatchStatistics = store.training
        if store.training {
            computeBatchStatistics(x, n: n, hw: hw)
        } else {
            for c in 0..<channels {
                mean[c] = Double(runningMean.value[c])
                invStd[c] = 1 / (Double(runningVar.value[c]) + eps).squareRoot()
            }
        }
        let y = Tensor.transient(shape: x.shape)
        output = fusedReLU ? y : nil
        outputBits = nil
        let relu = fusedReLU
        mean.withUnsafeBufferPointer { mean in
            invStd.withUnsafeBufferPointer { invStd in
                parallelChunks(channels, minimumPerChunk: Swift.max(1, 32768 / Swift.max(n * hw, 1))) { c0, c1 in
                    for c in c0..<c1 {
                        let scale = Float(Double(weight.value[c]) * invStd[c])
                        let shift = Float(Double(bias.value[c]) - mean[c] * Double(weight.value[c]) * invStd[c])
                        for i in 0..<n {
                            let src = x.data + (i * channels + c) * hw
                            let dst = y.data + (i * channels + c) * hw
                            if relu {
                                for j in 0..<hw { dst[j] = Swift.max(src[j] * scale + shift, 0) }
                            } else {
                                for j in 0..<hw { dst[j] = src[j] * scale + shift }
                            }
                        }
                    }
                }
            }
        }
        if store.keepsActivationsInBF16 {
            inputBits = BF16Activation(rounding: x)
            input = nil
        } else {
            inputBits = nil
        }
        return y
    }

    /// Local (count, mean, M2) per channel in double, merged across replicas, then the running-statistics update.
    private func computeBatchStatistics(_ x: Tensor, n: Int, hw: Int) {
        var localMean = [Double](repeating: 0, count: channels)
        var m2 = [Double](repeating: 0, count: channels)
        localMean.withUnsafeMutableBufferPointer { meanOut in
            m2.withUnsafeMutableBufferPointer { m2Out in
                parallelChunks(channels, minimumPerChunk: Swift.max(1, 32768 / Swift.max(n * hw, 1))) { c0, c1 in
                    for c in c0..<c1 {
                        // Each image's plane gives its own (count, mean, M2), which depend on that plane alone
                        // (PlaneSums); the planes are merged in image order as ranks are merged in rank order, so
                        // a batch split over ranks gets the statistics of the whole batch bit for bit.
                        var (total, m, q) = (0.0, 0.0, 0.0)
                        for i in 0..<n {
                            let plane = x.data + (i * channels + c) * hw
                            let planeMean = PlaneSums.sum(plane, count: hw) / Double(hw)
                            let rounded = Float(planeMean)
                            // Σ(x − mean)² = Σ(x − rounded)² − hw·(mean − rounded)²
                            let offset = planeMean - Double(rounded)
                            let planeM2 = PlaneSums.squaredDeviations(plane, count: hw, mean: rounded)
                                - Double(hw) * offset * offset
                            total = mergeStatistics(total: total, mean: &m, m2: &q, count: Double(hw),
                                                    partMean: planeMean, partM2: planeM2)
                        }
                        meanOut[c] = m
                        m2Out[c] = q
                    }
                }
            }
        }
        var count = Double(n * hw)
        localMean.withUnsafeMutableBufferPointer { meanBuffer in
            m2.withUnsafeMutableBufferPointer { m2Buffer in
                store.reducer.mergeBatchStatistics(count: &count, mean: meanBuffer, m2: m2Buffer, layer: layerName)
            }
        }
        precondition(count > 1, "\(weight.name): batch norm in training needs more than one value per channel")
        globalCount = count
        for c in 0..<channels {
            mean[c] = localMean[c]
            let variance = m2[c] / count
            invStd[c] = 1 / (variance + eps).squareRoot()
            unbiasedVariance[c] = m2[c] / (count - 1)
        }
        updateRunningStatistics()
    }

    /// Moves running_mean and running_var towards the last training forward's batch statistics and counts the batch.
    private func updateRunningStatistics() {
        for c in 0..<channels {
            runningMean.value[c] = Float((1 - momentum) * Double(runningMean.value[c]) + momentum * mean[c])
            runningVar.value[c] = Float((1 - momentum) * Double(runningVar.value[c]) + momentum * unbiasedVariance[c])
        }
        numBatchesTracked.value += 1
    }

    /// What a second training forward on the same input does to the buffers: the same update once more. mmseg's
    /// cascade runs the FCN head twice per step; this gives its running statistics without the second convolution.
    public func repeatRunningStatisticsUpdate() {
        precondition(usedBatchStatistics, "\(layerName): no training forward to repeat")
        updateRunningStatistics()
    }

    /// Keeps the last forward's output (the ReLU's, whose sign is all backward reads) as `bits` instead of fp32.
    public func keepOutput(_ bits: BF16Activation) {
        precondition(fusedReLU && bits.shape == output?.shape, "\(layerName): bf16 output kept for an unkept output")
        output = nil
        outputBits = bits
    }

    /// dy: N×C×H×W → dx: N×C×H×W; accumulates dγ = Σ dy·x̂ and dβ = Σ dy (local sums, averaged later with the other
    /// gradients). With batch statistics the input gradient needs the global sums Σdy and Σdy·(x−μ):
    /// dx = γ·invstd·(dy − Σdy/N − (x−μ)·invstd²·Σdy(x−μ)/N).
    public func backward(_ dy: Tensor) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("BatchNorm2d.backward", timing) }
        // x and y as planes, fp32 or kept bf16 bits; without ReLU nothing reads y and x stands in.
        guard let shape = input?.shape ?? inputBits?.shape,
              let x = input.map(ActivationPlane.init) ?? inputBits.map(ActivationPlane.init),
              let y = fusedReLU ? output.map(ActivationPlane.init) ?? outputBits.map(ActivationPlane.init) : x else {
            preconditionFailure("\(weight.name): backward before forward")
        }
        defer { (input, inputBits, output, outputBits) = (nil, nil, nil, nil) }   // saved for this backward alone (`Tensor.transient`)
        precondition(dy.shape == shape, "\(weight.name): gradient \(dy.shape) does not match input \(shape)")
        let (n, hw) = (shape[0], shape[2] * shape[3])
        let relu = fusedReLU
        // sums[c] = Σ dy', sums[C + c] = Σ dy'·(x − μ), with dy' the ReLU-masked gradient; dγ and dβ are added image
        // by image (float), so a batch split over ranks rounds exactly as the whole batch does in one process.
        var sums = [Double](repeating: 0, count: 2 * channels)
        sums.withUnsafeMutableBufferPointer { sums in
            mean.withUnsafeBufferPointer { mean in
                invStd.withUnsafeBufferPointer { invStd in
                    parallelChunks(channels, minimumPerChunk: Swift.max(1, 32768 / Swift.max(n * hw, 1))) { c0, c1 in
                        for c in c0..<c1 {
                            var sumDy = 0.0, sumDyXmu = 0.0
                            let mu = Float(mean[c])
                            for i in 0..<n {
                                let off = (i * channels + c) * hw
                                let (g, xs, ys) = (dy.data + off, x.offset(by: off), y.offset(by: off))
                                let (a, b) = relu
                                    ? PlaneSums.pair(count: hw, lanes: { j in
                                        let d = PlaneSums.load(g + j).replacing(with: 0, where: ys.lanes(j) .<= 0)
                                        return (d, d * (xs.lanes(j) - mu))
                                    }, single: { j in
                                        let d = ys[j] > 0 ? g[j] : 0
                                        return (d, d * (xs[j] - mu))
                                    })
                                    : PlaneSums.pair(count: hw, lanes: { j in
                                        let d = PlaneSums.load(g + j)
                                        return (d, d * (xs.lanes(j) - mu))
                                    }, single: { j in (g[j], g[j] * (xs[j] - mu)) })
                                sumDy += a; sumDyXmu += b
                                weight.grad[c] += Float(b * invStd[c])
                                bias.grad[c] += Float(a)
                            }
                            sums[c] = sumDy
                            sums[channels + c] = sumDyXmu
                        }
                    }
                }
            }
        }
        store.gradientReady?(weight)
        store.gradientReady?(bias)
        if usedBatchStatistics {
            sums.withUnsafeMutableBufferPointer { store.reducer.sumAcrossReplicas($0, layer: layerName) }
        }
        let dx = Tensor.transient(shape: shape)
        let batchStatistics = usedBatchStatistics
        let count = globalCount
        sums.withUnsafeBufferPointer { sums in
            mean.withUnsafeBufferPointer { mean in
                invStd.withUnsafeBufferPointer { invStd in
                    parallelChunks(channels, minimumPerChunk: Swift.max(1, 32768 / Swift.max(n * hw, 1))) { c0, c1 in
                        for c in c0..<c1 {
                            let gammaInvStd = Double(weight.value[c]) * invStd[c]
                            // dx = k·dy' − k·Σdy/N − (x−μ)·k·invstd²·Σdy(x−μ)/N, k = γ·invstd
                            let k = Float(gammaInvStd)
                            let shift = batchStatistics ? Float(gammaInvStd * sums[c] / count) : 0
                            let slope = batchStatistics
                                ? Float(gammaInvStd * invStd[c] * invStd[c] * sums[channels + c] / count) : 0
                            let mu = Float(mean[c])
                            for i in 0..<n {
                                let off = (i * channels + c) * hw
                                let (g, xs, ys, d) = (dy.data + off, x.offset(by: off), y.offset(by: off), dx.data + off)
                                if relu {
                                    PlaneSums.forEach(count: hw, lanes: { j in
                                        let masked = PlaneSums.load(g + j).replacing(with: 0, where: ys.lanes(j) .<= 0)
                                        PlaneSums.store(k * masked - shift - (xs.lanes(j) - mu) * slope, d + j)
                                    }, single: { j in d[j] = k * (ys[j] > 0 ? g[j] : 0) - shift - (xs[j] - mu) * slope })
                                } else {
                                    PlaneSums.forEach(count: hw, lanes: { j in
                                        let v = k * PlaneSums.load(g + j) - shift - (xs.lanes(j) - mu) * slope
                                        PlaneSums.store(v, d + j)
                                    }, single: { j in d[j] = k * g[j] - shift - (xs[j] - mu) * slope })
                                }
                            }
                        }
                    }
                }
            }
        }
        return dx
    }
}
