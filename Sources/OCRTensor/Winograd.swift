/// Winograd F(2×2, 3×3) convolution for 3×3, stride-1 convolutions that keep the size (padding = dilation): each
/// 2×2 block of outputs comes from a 4×4 block of inputs with 16 multiplies per channel pair instead of 36, so the
/// GEMM work is 2.25× smaller than im2col + GEMM's (Lavin & Gray, "Fast Algorithms for Convolutional Neural
/// Networks", 2016). With the transforms
///     Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],  G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],  Aᵀ = [1 1 1 0; 0 1 −1 −1]
/// a block is Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A, and summing over input channels turns the 16 element-wise products into
/// 16 GEMMs: M_ξ (O×T) = U_ξ (O×C) · V_ξ (C×T) over all T blocks of the batch.
///
/// A dilated convolution (dilation d) is d×d ordinary ones on the interleaved sub-images x[u·d + r, v·d + s],
/// so the blocks are laid out per sub-image. The input gradient of such a convolution is the same convolution of
/// dy with the flipped, transposed kernel, whose transform is the forward's rearranged (`convolve`, `transposed`).
public struct WinogradPlan {
    public let images, height, width, dilation: Int
    /// One 2×2 output block: its image, sub-image (row/column residue) and first sub-image row and column.
    struct Block { let image, rowResidue, colResidue, row, col, subHeight, subWidth: Int }
    let blocks: [Block]
    /// T, the 2×2 output blocks of all images: the columns of the 16 products.
    public var blockCount: Int { blocks.count }
    /// One sub-image (image, residues) with its block rows and columns and the index of its first block.
    struct SubImage { let image, rowResidue, colResidue, height, width, blockRows, blockCols, firstBlock: Int }
    let subImages: [SubImage]
    /// Floats the chunked parts of the scratch may take (`outputChannelChunk`, `inputChannelChunk`).
    public let scratchBudget: Int

    /// Default `scratchBudget`: 32 MB. Unbounded, the 16 fp32 products of R50-D8's OCR bottleneck input gradient
    /// (2048 channels of 64×128) took 268 MB and its weight gradient 292 MB of scratch in bf16, held at the step's
    /// peak. Only the bf16 passes are chunked: a chunk splits a GEMM's rows or columns, never its k, and ocr_bf16
    /// gives each element the same dot product whatever the split (ocr_bf16.h), so the bits do not depend on the
    /// budget (`WinogradTests`). OpenBLAS does not: split into column chunks, a 17×33 weight gradient changed in its
    /// last row. fp32 keeps its unchunked bits.
    public static let defaultScratchBudget = 8 << 20

    /// Whether a convolution of this shape can run here.
    public static func applies(kernel: Int, stride: Int, padding: Int, dilation: Int) -> Bool {
        kernel == 3 && stride == 1 && padding == dilation
    }

    public init(images: Int, height: Int, width: Int, dilation: Int, scratchBudget: Int = defaultScratchBudget) {
        self.images = images; self.height = height; self.width = width; self.dilation = dilation
        self.scratchBudget = scratchBudget
        var blocks: [Block] = []
        var subImages: [SubImage] = []
        for i in 0..<images {
            for r in 0..<Swift.min(dilation, height) {
                for s in 0..<Swift.min(dilation, width) {
                    let (sh, sw) = ((height - r + dilation - 1) / dilation, (width - s + dilation - 1) / dilation)
                    subImages.append(SubImage(image: i, rowResidue: r, colResidue: s, height: sh, width: sw,
                                              blockRows: (sh + 1) / 2, blockCols: (sw + 1) / 2,
                                              firstBlock: blocks.count))
                    for u in stride(from: 0, to: sh, by: 2) {
                        for v in stride(from: 0, to: sw, by: 2) {
                            blocks.append(Block(image: i, rowResidue: r, colResidue: s, row: u, col: v,
                                                subHeight: sh, subWidth: sw))
                        }
                    }
                }
            }
        }
        self.blocks = blocks
        self.subImages = subImages
    }

    /// Distance between consecutive ones of the 16 matrices of `count` floats: one cache line more than their
    /// size, because at power-of-two sizes (512×512) the 16 rows written or read together would all fall in the
    /// same cache sets and evict each other (measured: the kernel transform ran at ~2 GB/s).
    public static func matrixStride(_ count: Int) -> Int { count + 16 }

    /// The same for the 16 transformed inputs V_ξ when the GEMMs run in bf16: stored as bf16 bits, rounded as the
    /// GEMM's packing would round them (so the same products), with half the bytes written and read; one cache
    /// line more than their size, as above.
    public static func bitsStride(_ count: Int) -> Int { count + 32 }

    /// Floats (of fp32 scratch) the 16 transformed inputs of C channels take in `precision`.
    func transformedInputFloats(channels c: Int, precision: Precision) -> Int {
        precision == .bfloat16 ? 8 * Self.bitsStride(c * blocks.count) : 16 * Self.matrixStride(c * blocks.count)
    }

    /// Output channels whose 16 products `convolve` forms and transforms at a time: in bf16 as many as
    /// `scratchBudget` holds, in fp32 all.
    func outputChannelChunk(_ o: Int, precision: Precision) -> Int {
        guard precision == .bfloat16 else { return o }
        return Self.balancedChunk(o, most: scratchBudget / (16 * Self.matrixStride(blocks.count)))
    }

    /// Input channels whose transform and kernel gradients dU `weightGradient` forms at a time, for O output
    /// channels: in bf16 as many as `scratchBudget` holds, in fp32 all.
    func inputChannelChunk(_ c: Int, outChannels o: Int, precision: Precision) -> Int {
        guard precision == .bfloat16 else { return c }
        let perChannel = transformedInputFloats(channels: 1, precision: precision) + Self.kernelCount(outChannels: o, channels: 1)
        return Self.balancedChunk(c, most: scratchBudget / perChannel)
    }

    /// The chunk of n that splits it into as few chunks as hold at most `most` each, all about the same size (64
    /// channels where 63 fit run as two GEMMs of 32 rows, not 63 and 1).
    static func balancedChunk(_ n: Int, most: Int) -> Int {
        let chunks = (n + Swift.max(most, 1) - 1) / Swift.max(most, 1)
        return (n + chunks - 1) / chunks
    }

    /// Floats of scratch `convolve` needs for C input and O output channels.
    public func scratchCount(inChannels: Int, outChannels: Int, precision: Precision) -> Int {
        transformedInputFloats(channels: inChannels, precision: precision)
            + 16 * Self.matrixStride(outputChannelChunk(outChannels, precision: precision) * blocks.count)
    }

    /// Floats of a transformed kernel of O×C 3×3 kernels.
    public static func kernelCount(outChannels: Int, channels: Int) -> Int {
        16 * matrixStride(outChannels * channels)
    }

    /// y (N×O×H×W) = conv(x (N×C×H×W), w), overwriting y, with `kernel` = `transformKernel(w)`: 16 matrices O×C.
    /// With `transposed`, this is the input gradient of a convolution from `outChannels` to `channels` channels
    /// (x its output gradient) and `kernel` that convolution's own transform (16 matrices channels×outChannels):
    /// the flipped, transposed 3×3 kernels of an input gradient transform to those matrices transposed, with rows
    /// and columns 0 and 3 of the 4×4 block swapped (G·flip(g) = S·G·g for that swap S), so backward reuses the
    /// forward's transform. `precision` is that of the 16 GEMMs; the transforms are fp32.
    public func convolve(_ x: UnsafePointer<Float>, channels: Int, kernel u: UnsafePointer<Float>,
                         transposed: Bool = false, outChannels: Int, _ y: UnsafeMutablePointer<Float>,
                         scratch: UnsafeMutablePointer<Float>, precision: Precision = .float32) {
        let (c, o, t) = (channels, outChannels, blocks.count)
        let kernelStride = Self.matrixStride(o * c)
        let inputFloats = transformedInputFloats(channels: c, precision: precision)
        let m = scratch + inputFloats
        var timing = Profiler.begin()
        // An image's result must not depend on the rest of the batch: that keeps a batch split over ranks
        // bit-identical to the whole batch in one process. The bf16 GEMM computes every element the same way
        // whatever the column count (ocr_bf16.h), so one product covers all images' blocks (fewer, wider GEMMs:
        // measured on Zen 5, 2 threads, 2 images, R18's layer1 shape 64×1024×64 per image 65 → 134 GFLOP/s, layer4's
        // 512×256×512 411 → 455); OpenBLAS promises no such thing, so fp32 runs image by image (its blocks are a
        // run of columns).
        let (products, columns) = precision == .bfloat16 ? (1, t) : (Swift.max(images, 1), t / Swift.max(images, 1))
        let swap = [3, 1, 2, 0]
        let runs = (0..<16).flatMap { xi in (0..<products).map { (xi, $0 * columns) } }
        let kernels = runs.map { xi, _ in u + (transposed ? 4 * swap[xi / 4] + swap[xi % 4] : xi) * kernelStride }
        // The products of `chunk` output channels at a time (rows of U_ξ, columns of its transpose), each chunk
        // transformed into y before the next overwrites M; `bits`: V_ξ in bf16.
        func formProducts(bits: [UnsafePointer<UInt16>]) {
            let chunk = outputChannelChunk(o, precision: precision)
            for o0 in Swift.stride(from: 0, to: o, by: chunk) {
                let rows = o0..<Swift.min(o, o0 + chunk)
                let outputStride = Self.matrixStride(rows.count * t)
                let a = kernels.map { UnsafePointer($0 + (transposed ? o0 : o0 * c)) }
                let outputs = runs.map { xi, first in m + xi * outputStride + first }
                timing = Profiler.begin()
                if precision == .bfloat16 {
                    BF16.gemmBatch(transA: transposed, m: rows.count, n: t, k: c, a: a, lda: transposed ? o : c,
                                   bits: bits, ldb: t, c: outputs, ldc: t)
                } else {
                    gemmBatch(transA: transposed, m: rows.count, n: columns, k: c, a: a, lda: transposed ? o : c,
                              b: runs.map { xi, first in UnsafePointer(scratch + xi * Self.matrixStride(c * t) + first) },
                              ldb: t, c: outputs, ldc: t)
                }
                Profiler.end("Winograd GEMMs", timing)
                timing = Profiler.begin()
                transformOutput(m, channels: o, range: rows, into: y, precision: precision)
                Profiler.end("Winograd output transform", timing)
            }
        }
        if precision == .bfloat16 {
            scratch.withMemoryRebound(to: UInt16.self, capacity: 2 * inputFloats) { v in
                transformInput(x, channels: c, into: .bfloat16(v))
                Profiler.end("Winograd input transform", timing)
                formProducts(bits: (0..<16).map { UnsafePointer(v + $0 * Self.bitsStride(c * t)) })
            }
        } else {
            transformInput(x, channels: c, into: .float32(scratch))
            Profiler.end("Winograd input transform", timing)
            formProducts(bits: [])
        }
    }

    /// dw (O×C×3×3) = the weight gradient of `convolve` for input x (N×C×H×W) and output gradient dy (N×O×H×W),
    /// summed over the plan's images, overwriting dw: with V = Bᵀ d B of the input blocks and Z = A dŶ Aᵀ of the
    /// output-gradient blocks, dU_ξ (O×C) = Z_ξ (O×T) · V_ξᵀ (T×C) and dg = Gᵀ dU G for each kernel.
    public func weightGradient(_ x: UnsafePointer<Float>, channels: Int, _ dy: UnsafePointer<Float>,
                               outChannels: Int, into dw: UnsafeMutablePointer<Float>,
                               scratch: UnsafeMutablePointer<Float>, precision: Precision = .float32) {
        let (c, o, t) = (channels, outChannels, blocks.count)
        let outputStride = Self.matrixStride(o * t)
        let z = scratch, v = scratch + 16 * outputStride
        var timing = Profiler.begin()
        transformOutputGradient(dy, channels: o, into: z, precision: precision)
        Profiler.end("Winograd output-gradient transform", timing)
        let gradients = (0..<16).map { UnsafePointer(z + $0 * outputStride) }
        // `chunk` input channels at a time: their V_ξ (rows of the products' B), dU_ξ (its columns) and dg.
        let chunk = inputChannelChunk(c, outChannels: o, precision: precision)
        let du = v + transformedInputFloats(channels: chunk, precision: precision)
        for c0 in Swift.stride(from: 0, to: c, by: chunk) {
            let part = c0..<Swift.min(c, c0 + chunk)
            let kernelStride = Self.matrixStride(o * part.count)
            let kernelGradients = (0..<16).map { du + $0 * kernelStride }
            timing = Profiler.begin()
            if precision == .bfloat16 {
                v.withMemoryRebound(to: UInt16.self, capacity: 2 * transformedInputFloats(channels: chunk, precision: precision)) { bits in
                    transformInput(x, channels: c, range: part, into: .bfloat16(bits))
                    Profiler.end("Winograd input transform", timing)
                    timing = Profiler.begin()
                    BF16.gemmBatch(transB: true, m: o, n: part.count, k: t, a: gradients,
                                   bits: (0..<16).map { UnsafePointer(bits + $0 * Self.bitsStride(part.count * t)) },
                                   c: kernelGradients)
                }
            } else {
                transformInput(x, channels: c, range: part, into: .float32(v))
                Profiler.end("Winograd input transform", timing)
                timing = Profiler.begin()
                gemmBatch(transB: true, m: o, n: part.count, k: t, a: gradients,
                          b: (0..<16).map { UnsafePointer(v + $0 * Self.matrixStride(part.count * t)) },
                          c: kernelGradients)
            }
            Profiler.end("Winograd GEMMs", timing)
            timing = Profiler.begin()
            transformKernelGradient(du, outChannels: o, channels: c, range: part, into: dw)
            Profiler.end("Winograd kernel-gradient transform", timing)
        }
    }

    /// dg = Gᵀ dU G for the kernels of input channels `range` (of C), from their 16 matrices dU_ξ (O×range.count).
    func transformKernelGradient(_ du: UnsafePointer<Float>, outChannels o: Int, channels c: Int, range: Range<Int>,
                                 into dw: UnsafeMutablePointer<Float>) {
        let (part, kernelStride) = (range.count, Self.matrixStride(o * range.count))
        parallelChunks(o, minimumPerChunk: Swift.max(1, 4096 / Swift.max(part, 1))) { o0, o1 in
            for oc in (o0 * part)..<(o1 * part) {
                let src = du + oc
                // Row k of Gᵀ dU (3×4) from the columns of dU, then · G.
                @inline(__always) func column(_ b: Int) -> (Float, Float, Float) {
                    let (u0, u1, u2, u3) = (src[b * kernelStride], src[(4 + b) * kernelStride],
                                            src[(8 + b) * kernelStride], src[(12 + b) * kernelStride])
                    return (u0 + 0.5 * (u1 + u2), 0.5 * (u1 - u2), 0.5 * (u1 + u2) + u3)
                }
                let (c0, c1, c2, c3) = (column(0), column(1), column(2), column(3))
                let g = dw + ((oc / part) * c + range.lowerBound + oc % part) * 9
                g[0] = c0.0 + 0.5 * (c1.0 + c2.0); g[1] = 0.5 * (c1.0 - c2.0); g[2] = 0.5 * (c1.0 + c2.0) + c3.0
                g[3] = c0.1 + 0.5 * (c1.1 + c2.1); g[4] = 0.5 * (c1.1 - c2.1); g[5] = 0.5 * (c1.1 + c2.1) + c3.1
                g[6] = c0.2 + 0.5 * (c1.2 + c2.2); g[7] = 0.5 * (c1.2 - c2.2); g[8] = 0.5 * (c1.2 + c2.2) + c3.2
            }
        }
    }

    /// Scratch `weightGradient` needs: the output-gradient transform Z, then a chunk's input transform and dU.
    public func weightGradientScratchCount(inChannels: Int, outChannels: Int, precision: Precision) -> Int {
        let chunk = inputChannelChunk(inChannels, outChannels: outChannels, precision: precision)
        return 16 * Self.matrixStride(outChannels * blocks.count)
            + transformedInputFloats(channels: chunk, precision: precision)
            + Self.kernelCount(outChannels: outChannels, channels: chunk)
    }

    /// Z_ξ[o][t] = (A dŶ Aᵀ)_ξ for the 2×2 output-gradient block dŶ of block t (zero outside the image): the
    /// adjoint of `transformOutput`.
    /// With `precision` bf16 (the transforms of the bf16 path) it runs vectorised in C, with the same values
    /// (`ocr_bf16_winograd_output_gradient`), on each sub-image copied into a zero-padded buffer.
    public func transformOutputGradient(_ dy: UnsafePointer<Float>, channels o: Int, into z: UnsafeMutablePointer<Float>,
                                        precision: Precision = .float32) {
        let (t, d, plane) = (blocks.count, dilation, height * width)
        let stride = Self.matrixStride(o * t)
        if precision == .bfloat16 {
            forEachSubImage(channels: 0..<o) { oc, sub, outputs in
                outputs.update(repeating: 0, count: 4 * sub.blockRows * sub.blockCols)
                readSubImage(sub, of: dy + (sub.image * o + oc) * plane, into: outputs, rowStride: 2 * sub.blockCols)
                BF16.winogradOutputGradient(outputs, blockRows: sub.blockRows, blockCols: sub.blockCols,
                                            into: z + oc * t + sub.firstBlock, stride: stride)
            }
            return
        }
        blocks.withUnsafeBufferPointer { blocks in
            parallelChunks(o, minimumPerChunk: Swift.max(1, 2048 / Swift.max(t, 1))) { o0, o1 in
                for oc in o0..<o1 {
                    for (b, block) in blocks.enumerated() {
                        let src = dy + (block.image * o + oc) * plane
                        let top = src + (block.row * d + block.rowResidue) * width + block.col * d + block.colResidue
                        let (lower, right) = (block.row + 1 < block.subHeight, block.col + 1 < block.subWidth)
                        let y00 = top[0], y01 = right ? top[d] : 0
                        let y10 = lower ? top[d * width] : 0, y11 = lower && right ? top[d * width + d] : 0
                        // A dŶ: rows (y0q, y0q + y1q, y0q − y1q, −y1q); then each row (p, q) · Aᵀ = (p, p+q, p−q, −q).
                        let out = z + oc * t + b
                        @inline(__always) func emit(_ a: Int, _ p: Float, _ q: Float) {
                            out[(4 * a) * stride] = p
                            out[(4 * a + 1) * stride] = p + q
                            out[(4 * a + 2) * stride] = p - q
                            out[(4 * a + 3) * stride] = -q
                        }
                        emit(0, y00, y01)
                        emit(1, y00 + y10, y01 + y11)
                        emit(2, y00 - y10, y01 - y11)
                        emit(3, -y10, -y11)
                    }
                }
            }
        }
    }

    /// U_ξ[o][c] = (G g Gᵀ)_ξ for each 3×3 kernel g = w[o][c]: 16 matrices O×C.
    public static func transformKernel(_ w: UnsafePointer<Float>, outChannels o: Int, channels c: Int,
                                       into u: UnsafeMutablePointer<Float>) {
        let timing = Profiler.begin(); defer { Profiler.end("Winograd kernel transform", timing) }
        let stride = matrixStride(o * c)
        parallelChunks(o, minimumPerChunk: Swift.max(1, 4096 / Swift.max(c, 1))) { o0, o1 in
            for oc in (o0 * c)..<(o1 * c) {
                let g = w + oc * 9
                let out = u + oc
                // Row i of G g (4×3) is (x0, x1, x2); that row · Gᵀ gives U_ξ for ξ = 4i ..< 4i + 4.
                @inline(__always) func emit(_ i: Int, _ x0: Float, _ x1: Float, _ x2: Float) {
                    out[(4 * i) * stride] = x0
                    out[(4 * i + 1) * stride] = 0.5 * (x0 + x1 + x2)
                    out[(4 * i + 2) * stride] = 0.5 * (x0 - x1 + x2)
                    out[(4 * i + 3) * stride] = x2
                }
                let (g0, g1, g2, g3, g4, g5, g6, g7, g8) = (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8])
                emit(0, g0, g1, g2)
                emit(1, 0.5 * (g0 + g3 + g6), 0.5 * (g1 + g4 + g7), 0.5 * (g2 + g5 + g8))
                emit(2, 0.5 * (g0 - g3 + g6), 0.5 * (g1 - g4 + g7), 0.5 * (g2 - g5 + g8))
                emit(3, g6, g7, g8)
            }
        }
    }

    /// Where `transformInput` writes V_ξ: 16 fp32 matrices `matrixStride` apart, or, for bf16 GEMMs, 16 matrices
    /// of bf16 bits `bitsStride` apart.
    public enum TransformedInput {
        case float32(UnsafeMutablePointer<Float>)
        case bfloat16(UnsafeMutablePointer<UInt16>)
    }

    /// V_ξ[c][t] = (Bᵀ d B)_ξ for the 4×4 input block d of block t (zero outside the image). Each sub-image is
    /// first copied into a zero-bordered buffer, so the rows of Bᵀ d are whole-row vector operations and no block
    /// needs a bounds check. In bf16 the same arithmetic runs vectorised in C (`ocr_bf16_winograd_input`), rounding
    /// each value to bf16 bits as it stores it.
    /// Only the channels in `range` (all by default) are transformed, channel `ch` to row ch − range.lowerBound of
    /// matrices sized for range.count channels.
    public func transformInput(_ x: UnsafePointer<Float>, channels c: Int, range: Range<Int>? = nil,
                               into target: TransformedInput) {
        let (t, plane) = (blocks.count, height * width)
        let range = range ?? 0..<c
        let part = range.count
        // The padded sub-image plus the 4 rows of Bᵀ d, for the largest sub-image.
        var largest = 0
        for sub in subImages {
            let (ph, pw) = (2 * sub.blockRows + 2, 2 * sub.blockCols + 2)
            largest = Swift.max(largest, (ph + 4) * pw)
        }
        subImages.withUnsafeBufferPointer { subImages in
            parallelChunks(part, minimumPerChunk: Swift.max(1, 2048 / Swift.max(t, 1))) { c0, c1 in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: largest) { buffer in
                    let padded = buffer.baseAddress!
                    for row in c0..<c1 {
                        let ch = range.lowerBound + row
                        for sub in subImages {
                            // Sub-image rows and columns −1 ..< 2·blocks + 1, zero outside the image.
                            let (ph, pw) = (2 * sub.blockRows + 2, 2 * sub.blockCols + 2)
                            padded.update(repeating: 0, count: ph * pw)
                            readSubImage(sub, of: x + (sub.image * c + ch) * plane, into: padded + pw + 1, rowStride: pw)
                            let v: UnsafeMutablePointer<Float>
                            switch target {
                            case .float32(let matrices): v = matrices
                            case .bfloat16(let matrices):
                                BF16.winogradInput(padded: padded, blockRows: sub.blockRows, blockCols: sub.blockCols,
                                                   into: matrices + row * t + sub.firstBlock,
                                                   stride: Self.bitsStride(part * t))
                                continue
                            }
                            let stride = Self.matrixStride(part * t)
                            let rows = padded + ph * pw   // Bᵀ d for one block row: 4 rows of pw
                            for bu in 0..<sub.blockRows {
                                let (d0, d1, d2, d3) = (padded + 2 * bu * pw, padded + (2 * bu + 1) * pw,
                                                        padded + (2 * bu + 2) * pw, padded + (2 * bu + 3) * pw)
                                for q in 0..<pw {
                                    rows[q] = d0[q] - d2[q]
                                    rows[pw + q] = d1[q] + d2[q]
                                    rows[2 * pw + q] = d2[q] - d1[q]
                                    rows[3 * pw + q] = d1[q] - d3[q]
                                }
                                let first = sub.firstBlock + bu * sub.blockCols
                                for i in 0..<4 {
                                    let r = rows + i * pw
                                    let out = v + 4 * i * stride + row * t + first
                                    for bv in 0..<sub.blockCols {
                                        let (e0, e1, e2, e3) = (r[2 * bv], r[2 * bv + 1], r[2 * bv + 2], r[2 * bv + 3])
                                        out[bv] = e0 - e2
                                        out[stride + bv] = e1 + e2
                                        out[2 * stride + bv] = e2 - e1
                                        out[3 * stride + bv] = e1 - e3
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Sub-image `sub` of one channel's plane (H×W), its rows `rowStride` apart in `rows`: every d-th pixel from its
    /// residues on.
    func readSubImage(_ sub: SubImage, of plane: UnsafePointer<Float>, into rows: UnsafeMutablePointer<Float>,
                      rowStride: Int) {
        let (d, src) = (dilation, plane + sub.rowResidue * width + sub.colResidue)
        for u in 0..<sub.height {
            let (row, line) = (rows + u * rowStride, src + u * d * width)
            if d == 1 { row.update(from: line, count: sub.width) } else { for q in 0..<sub.width { row[q] = line[q * d] } }
        }
    }

    /// The inverse of `readSubImage`: the sub-image's rows written back to where they lie in the plane.
    func writeSubImage(_ sub: SubImage, from rows: UnsafePointer<Float>, rowStride: Int,
                       into plane: UnsafeMutablePointer<Float>) {
        let (d, dst) = (dilation, plane + sub.rowResidue * width + sub.colResidue)
        for u in 0..<sub.height {
            let (row, line) = (rows + u * rowStride, dst + u * d * width)
            if d == 1 { line.update(from: row, count: sub.width) } else { for q in 0..<sub.width { line[q * d] = row[q] } }
        }
    }

    /// body(channel, sub-image, buffer) for every channel and sub-image, the channels split over the threads, with
    /// a buffer of a sub-image's 2·blockRows × 2·blockCols outputs per thread.
    func forEachSubImage(channels: Range<Int>, _ body: (Int, SubImage, UnsafeMutablePointer<Float>) -> Void) {
        let largest = subImages.map { 4 * $0.blockRows * $0.blockCols }.max() ?? 0
        subImages.withUnsafeBufferPointer { subImages in
            parallelChunks(channels.count, minimumPerChunk: Swift.max(1, 2048 / Swift.max(blocks.count, 1))) { c0, c1 in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: largest) { buffer in
                    for channel in (channels.lowerBound + c0)..<(channels.lowerBound + c1) {
                        for sub in subImages { body(channel, sub, buffer.baseAddress!) }
                    }
                }
            }
        }
    }

    /// y block = Aᵀ m A for each output channel and block, written where it falls inside the image. With
    /// `precision` bf16 (the transforms of the bf16 path) it runs vectorised in C, with the same values
    /// (`ocr_bf16_winograd_output`), a sub-image at a time.
    /// Only the channels in `range` (all by default) are written, from matrices of range.count rows.
    public func transformOutput(_ m: UnsafePointer<Float>, channels o: Int, range: Range<Int>? = nil,
                                into y: UnsafeMutablePointer<Float>, precision: Precision = .float32) {
        let (t, d, plane) = (blocks.count, dilation, height * width)
        let range = range ?? 0..<o
        let stride = Self.matrixStride(range.count * t)
        if precision == .bfloat16 {
            forEachSubImage(channels: range) { oc, sub, outputs in
                BF16.winogradOutput(m + (oc - range.lowerBound) * t + sub.firstBlock, stride: stride, blockRows: sub.blockRows,
                                    blockCols: sub.blockCols, into: outputs)
                writeSubImage(sub, from: outputs, rowStride: 2 * sub.blockCols, into: y + (sub.image * o + oc) * plane)
            }
            return
        }
        blocks.withUnsafeBufferPointer { blocks in
            parallelChunks(range.count, minimumPerChunk: Swift.max(1, 2048 / Swift.max(t, 1))) { o0, o1 in
                for oc in (range.lowerBound + o0)..<(range.lowerBound + o1) {
                    for (b, block) in blocks.enumerated() {
                        let src = m + (oc - range.lowerBound) * t + b
                        // Output (row, column) of the 2×2 block.
                        var (y00, y10, y01, y11): (Float, Float, Float, Float) = (0, 0, 0, 0)
                        // Row a of m · A gives (r0, r1); Aᵀ then combines the rows.
                        for a in 0..<4 {
                            let (m0, m1, m2, m3) = (src[(4 * a) * stride], src[(4 * a + 1) * stride],
                                                    src[(4 * a + 2) * stride], src[(4 * a + 3) * stride])
                            let (r0, r1) = (m0 + m1 + m2, m1 - m2 - m3)
                            switch a {
                            case 0: y00 += r0; y01 += r1
                            case 1: y00 += r0; y10 += r0; y01 += r1; y11 += r1
                            case 2: y00 += r0; y10 -= r0; y01 += r1; y11 -= r1
                            default: y10 -= r0; y11 -= r1
                            }
                        }
                        let dst = y + (block.image * o + oc) * plane
                        let top = dst + (block.row * d + block.rowResidue) * width + block.col * d + block.colResidue
                        let (lower, right) = (block.row + 1 < block.subHeight, block.col + 1 < block.subWidth)
                        top[0] = y00
                        if right { top[d] = y01 }
                        if lower {
                            top[d * width] = y10
                            if right { top[d * width + d] = y11 }
                        }
                    }
                }
            }
        }
    }
}
