import OCRTensor

/// 2-D convolution, NCHW input, OIHW weight, optional bias.
/// x: N×C×H×W, w: O×C×k×k → y: N×O×Ho×Wo, computed per image as one GEMM y_n = W·col(x_n), where col is the
/// im2col matrix (C·k·k)×(Ho·Wo); a 1×1 stride-1 convolution multiplies x_n directly.
public final class Conv2d {
    public let weight: Parameter
    public let bias: Parameter?
    public let inChannels, outChannels, kernel, stride, padding, dilation: Int
    /// False for the first layer of the network, whose input gradient nobody needs.
    public var needsInputGradient = true
    /// How 3×3 stride-1 "same" convolutions run forward, input and weight gradients: Winograd F(2×2, 3×3) (2.25×
    /// fewer multiplies) or im2col + GEMM, the reference Winograd is tested against. Other shapes use im2col + GEMM.
    /// `tiles`: in bf16 on AMX, stride-1 forwards and input gradients run straight on the tiles (`BF16.convolve`),
    /// the rest as im2col + GEMM; `.automatic` does so too, except where it picks Winograd.
    public enum Algorithm { case automatic, winograd, im2colGemm, tiles }
    public var algorithm = Algorithm.automatic
    private var winogradPlan: WinogradPlan?
    /// In bf16 the forward and the input gradient run one Winograd pass over the whole batch (`batchPlan`).
    private var winogradBatchPlan: WinogradPlan?
    /// The forward's Winograd transform of the weights, kept for the input gradient while training.
    private var winogradKernel: Tensor?

    private let store: ParameterStore
    /// The forward's input, for the weight gradient: fp32, or its bf16 bits once `keepInput` replaced it.
    private var input: Tensor?
    private var inputBits: BF16Activation?

    public init(_ scope: Scope, in inChannels: Int, out outChannels: Int, kernel: Int, stride: Int = 1,
                padding: Int = 0, dilation: Int = 1, bias: Bool = false,
                weightInit: Initializer = .kaimingNormalFanOut, biasInit: Initializer = .constant(0)) {
        self.inChannels = inChannels; self.outChannels = outChannels; self.kernel = kernel
        self.stride = stride; self.padding = padding; self.dilation = dilation
        self.store = scope.store
        weight = scope.parameter("weight", shape: [outChannels, inChannels, kernel, kernel], initializer: weightInit)
        self.bias = bias ? scope.parameter("bias", shape: [outChannels], initializer: biasInit) : nil
    }

    func geometry(_ shape: [Int]) -> ConvGeometry {
        precondition(shape.count == 4 && shape[1] == inChannels,
                     "\(weight.name): input \(shape) does not have \(inChannels) channels")
        return ConvGeometry(channels: inChannels, height: shape[2], width: shape[3], kernelH: kernel,
                            kernelW: kernel, stride: stride, padding: padding, dilation: dilation)
    }

    /// 1×1, stride 1, no padding: the image itself is the column matrix.
    var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 }

    /// The (C·k·k)×(Ho·Wo) matrix of one image: unfolded into `col`, or the image itself for a pointwise conv.
    private func columnMatrix(_ image: UnsafeMutablePointer<Float>, _ g: ConvGeometry,
                              _ col: UnsafeMutablePointer<Float>?) -> UnsafePointer<Float> {
        guard let col else { return UnsafePointer(image) }
        let timing = Profiler.begin(); defer { Profiler.end("im2col", timing) }
        im2col(image, g, col)
        return UnsafePointer(col)
    }

    /// `.automatic` uses Winograd from this many input and output channels: below, its GEMMs are too thin to pay
    /// for the transforms (measured: HRNet-W18's 18- and 36-channel branches ran slower than with im2col + GEMM).
    static let winogradMinimumChannels = 32

    /// Whether `.automatic` runs Winograd. In bf16 on a matrix engine (AMX) only from 1024 input channels on:
    /// below, the tiles run im2col's 2.25× larger product about as fast as Winograd's 16 thin GEMMs plus its fp32
    /// transforms, and with less rounding (0.8× PyTorch bf16's error against Winograd's 1.37×; docs/TESTING.md);
    /// from there (R50's OCR bottleneck 2048→512, FCN 1024→256) the fp32 column matrix of 9·C rows costs more to
    /// unfold and pack than Winograd's transforms. Measured, training steps alternating on a noisy shared host:
    /// R18-D8 256² batch 2 (no layer that wide) on AMX 2.19–3.38 img/s (median 2.96) with im2col, 2.31–3.05
    /// (median 2.79) with Winograd; R50-D8 512×1024 on AMX 0.151–0.184 img/s with im2col everywhere, 0.194–0.207
    /// (peak RSS 3796 → 3648 MiB) with Winograd from 1024 channels; AVX512-BF16 alone, R18: 1.01–1.03 with im2col,
    /// 1.35–1.37 with Winograd, which it keeps everywhere. Since then stride-1 convolutions below 1024 channels run
    /// on the AMX tiles (`runsOnTiles`), measured call by call alternating (`bench-convs --amp --alternate`, R50
    /// shapes at 256², batch 2, ms forward/backward): 64→64 1.20/2.93 against im2col's 3.39/6.05, 512→512 d4
    /// 16.96/43.95 against Winograd's 17.08/36.79; from 1024 Winograd stays ahead (2048→512 59.5/124.0 against the
    /// tiles' 81.2/178.6).
    private var automaticWinograd: Bool {
        guard Swift.min(inChannels, outChannels) >= Self.winogradMinimumChannels else { return false }
        return !(store.precision == .bfloat16 && BF16.hasMatrixEngine) || inChannels >= Self.matrixEngineWinogradChannels
    }

    /// In bf16 on AMX, `.automatic` uses Winograd from this many input channels (see `automaticWinograd`).
    static let matrixEngineWinogradChannels = 1024

    /// bf16 convolutions other than pointwise and Winograd ones never store the column matrix (9× the image for a
    /// 3×3 kernel): on the AMX tiles they need none (`runsOnTiles`); elsewhere they unfold it block by block inside
    /// the GEMM (`BF16.gemmIm2col`), the same bits as im2col + GEMM and on AMX faster forward on every R18-D8 shape,
    /// measured alternating (README, "Speed").
    private var unfoldsInGemm: Bool { store.precision == .bfloat16 && !isPointwise }

    /// y_i = conv(x_i) for `images` images of `geometry` in bf16, with this layer's kernel, or for the input gradient
    /// (`flipped`: x is dy, y is dx) with `flippedKernel()`: straight on the AMX tiles where they run it
    /// (`BF16.convolve`: no column matrix at all), else with the column matrix unfolded block by block in the GEMM.
    /// Measured per shape on AMX in C (best of 12, 2 threads, forward): 64→64 at 64×64 0.71 ms against 1.62,
    /// 512→512 d4 at 32×32 10.1 against 13.4, 18→18 at 64×128 0.30 against 0.55.
    private func convolveInBF16(_ x: UnsafePointer<Float>, images: Int, geometry g: ConvGeometry, flipped: Bool = false,
                                into y: UnsafeMutablePointer<Float>) {
        let outputs = flipped ? inChannels : outChannels
        let (inSize, outSize) = (g.channels * g.height * g.width, outputs * g.outPixels)
        if runsOnTiles(g, outputs: outputs) {
            let floats = BF16.convolutionFloats(outChannels: outputs, geometry: g)
            let scratch = store.workspace.buffer(floats.kernel + floats.planes)
            BF16.packConvolutionKernel(outChannels: outputs, geometry: g, weights: weight.value.data, flipped: flipped,
                                       into: scratch)
            for i in 0..<images {
                BF16.convolve(outChannels: outputs, packedKernel: scratch, geometry: g, image: x + i * inSize,
                              planes: scratch + floats.kernel, y: y + i * outSize)
            }
        } else {
            let kernel: Tensor = flipped ? flippedKernel() : weight.value
            let packed = store.workspace.buffer(BF16.packedFloats(m: outputs, k: g.columnRows))
            BF16.packA(m: outputs, k: g.columnRows, a: kernel.data, into: packed)
            for i in 0..<images {
                BF16.gemmIm2col(m: outputs, packedA: packed, geometry: g, image: x + i * inSize, c: y + i * outSize)
            }
        }
    }

    /// The input gradient as a convolution, where that holds (stride 1): dx = conv(dy, W̃) with W̃ the kernel flipped
    /// and transposed (W̃[c, o, i, j] = W[o, c, k−1−i, k−1−j]) and dy padded by d·(k−1) − p.
    private func inputGradientGeometry(_ g: ConvGeometry) -> ConvGeometry? {
        guard stride == 1, padding <= dilation * (kernel - 1) else { return nil }
        return ConvGeometry(channels: outChannels, height: g.outHeight, width: g.outWidth, kernelH: kernel,
                            kernelW: kernel, padding: dilation * (kernel - 1) - padding, dilation: dilation)
    }

    /// Whether the bf16 input gradient runs as that convolution (`convolveInBF16`) rather than as dcol = Wᵀ·dy
    /// scattered back (col2im): always on the AMX tiles; unfolded in the GEMM only below 128 output channels, since
    /// dcol's GEMM (k = O) runs well from there on. Measured on AMX (`bench-convs --amp`, backward, variants
    /// alternated, best of 11, twice), unfolded against scattered: 32→32 at 128×256 6.1–7.1 ms against 13.8–15.6,
    /// 64→64 at 64×128 5.0–5.3 against 6.8–7.4; but 128→128 4.0–4.1 against 3.5–3.7, 256→256 d2 12.4–12.8 against
    /// 10.2–10.7 and 512→512 d4 46–49 against 34–36.
    private func convolvesInputGradient(_ dyGeometry: ConvGeometry) -> Bool {
        runsOnTiles(dyGeometry, outputs: inChannels) || outChannels < Self.scatteredInputGradientChannels
    }

    /// Whether a bf16 convolution of `g` into `outputs` channels runs on the AMX tiles (`convolveInBF16`).
    private func runsOnTiles(_ g: ConvGeometry, outputs: Int) -> Bool {
        (algorithm == .automatic || algorithm == .tiles) && BF16.convolves(outChannels: outputs, geometry: g)
    }

    /// From this many output channels the bf16 input gradient, when not on the tiles, goes through dcol and col2im.
    static let scatteredInputGradientChannels = 128

    /// Input channels whose dcol rows one GEMM of the scattered input gradient forms: all in fp32 (unchanged from
    /// before bf16 existed, so its bits are too); in bf16, where the column matrix is needed for nothing else, 32
    /// (288 rows for 3×3), which bounds the workspace to 288 × Ho·Wo floats (R50-D8 512×1024 layer4: 9 MB against
    /// 151 MB). Each element is the same dot product either way, so the bits do not change.
    private var scatterChannels: Int { unfoldsInGemm ? Swift.min(32, inChannels) : inChannels }

    /// The Winograd blocks of one image of this input, when this convolution runs that way. The weight gradient runs
    /// image by image (each image's dW formed alone), as fp32 does every pass: that keeps the transform scratch to
    /// one image's and an image's result independent of its batch (bf16 passes: `batchPlan`). Sets `winogradPlan`,
    /// which backward follows: the choice can change between a bf16 training pass and an fp32 evaluation.
    private func winograd(_ x: Tensor) -> WinogradPlan? {
        let wanted = algorithm == .winograd || (algorithm == .automatic && automaticWinograd)
        guard wanted, WinogradPlan.applies(kernel: kernel, stride: stride, padding: padding, dilation: dilation) else {
            winogradPlan = nil
            return nil
        }
        let (h, w) = (x.shape[2], x.shape[3])
        if let plan = winogradPlan, plan.height == h, plan.width == w { return plan }
        winogradPlan = WinogradPlan(images: 1, height: h, width: w, dilation: dilation)
        return winogradPlan
    }

    /// The plan the forward and the input gradient of `images` images run: the batch at once in bf16, whose 16 GEMMs
    /// then take every image's blocks in one product each (still computing each image's result as alone, see
    /// `WinogradPlan.convolve`); image by image in fp32. The weight gradient stays image by image either way.
    private func batchPlan(_ plan: WinogradPlan, images: Int) -> WinogradPlan {
        guard store.precision == .bfloat16, images > 1 else { return plan }
        if let batch = winogradBatchPlan, batch.images == images, batch.height == plan.height,
           batch.width == plan.width {
            return batch
        }
        let batch = WinogradPlan(images: images, height: plan.height, width: plan.width, dilation: dilation)
        winogradBatchPlan = batch
        return batch
    }

    /// The weights' Winograd transform, 16 matrices O×C (`WinogradPlan.matrixStride` apart).
    private func transformedKernel() -> Tensor {
        let kernel = Tensor.transient(shape: [WinogradPlan.kernelCount(outChannels: outChannels, channels: inChannels)])
        WinogradPlan.transformKernel(weight.value.data, outChannels: outChannels, channels: inChannels,
                                     into: kernel.data)
        return kernel
    }

    /// W̃ (C × O·k·k): W̃[c, (o, i, j)] = W[o, c, k−1−i, k−1−j], the kernel of the input gradient as a convolution.
    private func flippedKernel() -> Tensor {
        let k = kernel, rows = outChannels * k * k
        let flipped = Tensor.transient(shape: [inChannels, rows])
        let (w, f) = (weight.value.data, flipped.data)
        for c in 0..<inChannels {
            for o in 0..<outChannels {
                for i in 0..<k {
                    for j in 0..<k {
                        f[c * rows + (o * k + i) * k + j] = w[((o * inChannels + c) * k + k - 1 - i) * k + k - 1 - j]
                    }
                }
            }
        }
        return flipped
    }

    /// Profile row of this convolution's kernel shape, e.g. "conv 3×3" or "conv 3×3 Winograd".
    private var profileName: String {
        "conv \(kernel)×\(kernel)" + (winogradPlan != nil ? " Winograd" : "")
    }

    public func forward(_ x: Tensor) -> Tensor {
        let plan = winograd(x)
        let timing = Profiler.begin(); defer { Profiler.end("\(profileName) forward", timing) }
        let g = geometry(x.shape)
        let n = x.shape[0]
        // Transient: the output goes when its readers are done (a BN may keep it as bf16 bits, `BatchNorm2d.input`).
        let y = Tensor.transient(shape: [n, outChannels, g.outHeight, g.outWidth])
        input = x
        inputBits = nil
        let (inSize, outSize) = (inChannels * g.height * g.width, outChannels * g.outPixels)
        Profiler.countForwardFlops(2 * n * outChannels * g.outPixels * g.columnRows)
        if let plan {
            let kernel = transformedKernel()
            let pass = batchPlan(plan, images: n)
            let scratch = store.workspace.buffer(pass.scratchCount(inChannels: inChannels, outChannels: outChannels,
                                                                            precision: store.precision))
            for i in Swift.stride(from: 0, to: n, by: pass.images) {
                pass.convolve(x.data + i * inSize, channels: inChannels, kernel: kernel.data,
                              outChannels: outChannels, y.data + i * outSize, scratch: scratch,
                              precision: store.precision)
            }
            winogradKernel = store.training && needsInputGradient ? kernel : nil
        } else if unfoldsInGemm {
            convolveInBF16(x.data, images: n, geometry: g, into: y.data)
        } else {
            let col = isPointwise ? nil : store.workspace.buffer(g.columnRows * g.outPixels)
            for i in 0..<n {
                let columns = columnMatrix(x.data + i * inSize, g, col)
                gemm(m: outChannels, n: g.outPixels, k: g.columnRows, a: weight.value.data, b: columns,
                     c: y.data + i * outSize, precision: store.precision)
            }
        }
        if let bias {
            let hw = g.outPixels
            for i in 0..<n {
                for o in 0..<outChannels {
                    let plane = y.data + i * outSize + o * hw
                    let b = bias.value[o]
                    for j in 0..<hw { plane[j] += b }
                }
            }
        }
        return y
    }

    /// Keeps the last forward's input as `bits` (its values rounded) instead of fp32, which can then go: in bf16 the
    /// weight gradient's GEMM rounds its column operand to those very values (`BF16Activation`).
    public func keepInput(_ bits: BF16Activation) {
        precondition(store.precision == .bfloat16 && bits.shape == input?.shape,
                     "\(weight.name): bf16 input \(bits.shape) kept for fp32 input \(input?.shape ?? [])")
        input = nil
        inputBits = bits
    }

    /// dy: N×O×Ho×Wo → dx: N×C×H×W (nil when not needed); accumulates dW += dy_n·col(x_n)ᵀ and db += Σ dy.
    @discardableResult
    public func backward(_ dy: Tensor) -> Tensor? {
        guard let shape = input?.shape ?? inputBits?.shape else { preconditionFailure("\(weight.name): backward before forward") }
        defer { (input, inputBits) = (nil, nil) }   // saved for this backward alone (`Tensor.transient`)
        let timing = Profiler.begin(); defer { Profiler.end("\(profileName) backward dW", timing) }
        // A pointwise convolution reads kept bits as they are, as its weight-gradient GEMM's bf16 B operand (its
        // input gradient never reads x); the others read x in fp32, the kept bits expanded into a transient copy.
        let keptBits = input == nil && isPointwise ? inputBits : nil
        let x = keptBits == nil ? input ?? inputBits?.expanded() : nil
        let g = geometry(shape)
        let n = shape[0]
        let (inSize, outSize) = (inChannels * g.height * g.width, outChannels * g.outPixels)
        precondition(dy.count == n * outSize, "\(weight.name): gradient \(dy.shape) does not match the output")
        let dx = needsInputGradient ? Tensor.transient(shape: shape) : nil
        // bf16: dW_i = dy_i·col(x_i)ᵀ on the AMX tiles where they run it, else with the column matrix unfolded in the
        // GEMM; dx = conv(dy, W̃) where `convolvesInputGradient`, else scattered from dcol = Wᵀ·dy_i, which needs the
        // column matrix.
        let unfoldedWeightGradient = winogradPlan == nil && unfoldsInGemm
        let dyGeometry = inputGradientGeometry(g)
        let convolvedInputGradient = unfoldedWeightGradient && dx != nil
            && dyGeometry.map(convolvesInputGradient) == true
        let needsColumns = winogradPlan == nil && !isPointwise
            && !(unfoldedWeightGradient && (dx == nil || convolvedInputGradient))
        // Work space of one image's weight gradient (Winograd transforms, dy_i packed, or the column matrix, which
        // then holds dcol), then its dW.
        let columnFloats = (unfoldedWeightGradient ? scatterChannels * kernel * kernel : g.columnRows) * g.outPixels
        let tiledWeightGradient = unfoldedWeightGradient && runsOnTiles(g, outputs: outChannels)
        let unfoldedFloats = tiledWeightGradient ? BF16.weightGradientFloats(outChannels: outChannels, geometry: g)
            : unfoldedWeightGradient ? BF16.packedFloats(m: outChannels, k: g.outPixels) : 0
        let workFloats = winogradPlan?.weightGradientScratchCount(inChannels: inChannels, outChannels: outChannels,
                                                                  precision: store.precision)
            ?? Swift.max(unfoldedFloats, needsColumns ? columnFloats : 0)
        let scratch = store.workspace.buffer(workFloats + weight.value.count)
        let col = needsColumns ? scratch : nil
        let imageWeightGrad = scratch + workFloats
        for i in 0..<n {
            let xi = x.map { $0.data + i * inSize }   // nil when the kept bits are read instead
            let dyi = dy.data + i * outSize
            // Each image's dW is formed on its own and then added, so a batch split over ranks and summed by the
            // allreduce rounds exactly as the whole batch does in one process. Into a zero gradient it is stored
            // directly (0 + dW is dW).
            let target = weight.gradientIsZero ? weight.grad.data : imageWeightGrad
            if let keptBits {
                // dW (O×C) = dy_i (O×P) · x_iᵀ (P×C), x_i as the bits the GEMM would round it to
                BF16.gemmBatch(transB: true, m: outChannels, n: inChannels, k: g.outPixels, a: [UnsafePointer(dyi)],
                               bits: [UnsafePointer(keptBits.bits + i * inSize)], c: [target])
            } else if let plan = winogradPlan {
                plan.weightGradient(xi!, channels: inChannels, dyi, outChannels: outChannels, into: target,
                                    scratch: scratch, precision: store.precision)
            } else if tiledWeightGradient {
                BF16.convolutionWeightGradient(outChannels: outChannels, geometry: g, image: xi!, dy: dyi,
                                               scratch: scratch, dw: target)
            } else if unfoldedWeightGradient {
                BF16.packA(m: outChannels, k: g.outPixels, a: dyi, into: scratch)
                BF16.gemmIm2col(transB: true, m: outChannels, packedA: scratch, geometry: g, image: xi!,
                                c: target)
            } else {
                // dW (O×CKK) = dy_i (O×P) · col_iᵀ (P×CKK)
                let columns = columnMatrix(xi!, g, col)
                gemm(transB: true, m: outChannels, n: g.columnRows, k: g.outPixels, a: dyi, b: columns, c: target,
                     precision: store.precision)
            }
            if weight.gradientIsZero {
                weight.gradientIsZero = false
            } else {
                let gw = weight.grad.data
                parallelChunks(weight.value.count, minimumPerChunk: 1 << 16) { s, e in
                    for j in s..<e { gw[j] += imageWeightGrad[j] }
                }
            }
            guard let dx, winogradPlan == nil, !convolvedInputGradient else { continue }
            let inputTiming = Profiler.begin(); defer { Profiler.end("\(profileName) backward dX", inputTiming) }
            let dxi = dx.data + i * inSize
            if let col {
                // dcol (CKK×P) = Wᵀ (CKK×O) · dy_i (O×P), scattered back onto the image, `scatterChannels` channels'
                // rows at a time.
                dxi.update(repeating: 0, count: inSize)
                let kk = kernel * kernel
                for c0 in Swift.stride(from: 0, to: inChannels, by: scatterChannels) {
                    let channels = Swift.min(scatterChannels, inChannels - c0)
                    gemm(transA: true, m: channels * kk, n: g.outPixels, k: outChannels, a: weight.value.data + c0 * kk,
                         lda: g.columnRows, b: dyi, c: col, precision: store.precision)
                    let scatterTiming = Profiler.begin()
                    col2im(col, ConvGeometry(channels: channels, height: g.height, width: g.width, kernelH: kernel,
                                             kernelW: kernel, stride: stride, padding: padding, dilation: dilation),
                           dxi + c0 * g.height * g.width)
                    Profiler.end("col2im", scatterTiming)
                }
            } else {
                gemm(transA: true, m: inChannels, n: g.outPixels, k: outChannels, a: weight.value.data, b: dyi,
                     c: dxi, precision: store.precision)
            }
        }
        if let plan = winogradPlan, let dx {
            // dx is the same-size convolution of dy with the flipped, transposed kernel: Winograd again, on the
            // forward's kernel transform.
            let inputTiming = Profiler.begin(); defer { Profiler.end("\(profileName) backward dX", inputTiming) }
            let kernel = winogradKernel ?? transformedKernel()   // kept only by a training forward
            winogradKernel = nil   // backward walks towards the large early layers, which can reuse its storage
            let pass = batchPlan(plan, images: n)
            let scratch = store.workspace.buffer(pass.scratchCount(inChannels: outChannels, outChannels: inChannels,
                                                                            precision: store.precision))
            for i in Swift.stride(from: 0, to: n, by: pass.images) {
                pass.convolve(dy.data + i * outSize, channels: outChannels, kernel: kernel.data, transposed: true,
                              outChannels: inChannels, dx.data + i * inSize, scratch: scratch,
                              precision: store.precision)
            }
        }
        if convolvedInputGradient, let dx, let dyGeometry {
            let inputTiming = Profiler.begin(); defer { Profiler.end("\(profileName) backward dX", inputTiming) }
            convolveInBF16(dy.data, images: n, geometry: dyGeometry, flipped: true, into: dx.data)
        }
        if let bias {
            let hw = g.outPixels
            for i in 0..<n {
                for o in 0..<outChannels {
                    let plane = dy.data + i * outSize + o * hw
                    var t = 0.0
                    for j in 0..<hw { t += Double(plane[j]) }
                    bias.grad[o] += Float(t)
                }
            }
            store.gradientReady?(bias)
        }
        store.gradientReady?(weight)
        return dx
    }
}
