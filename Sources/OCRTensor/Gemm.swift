import CBLAS
import COCRBF16

/// The operand precision of a GEMM call. Accumulation and every operand and result in memory stay fp32 either way;
/// `bfloat16` rounds the operands to bf16 as they are packed (mmengine's AmpOptimWrapper with dtype bfloat16 does
/// the same to the operands of convolutions and matrix products, through torch.autocast).
public enum Precision: String, Sendable {
    case float32, bfloat16

    /// What a requested precision runs as on this CPU: bf16 only where there is a bf16 dot-product instruction
    /// (without one, rounding the operands costs accuracy and time and gains nothing).
    public static func available(_ requested: Precision) -> Precision {
        requested == .bfloat16 && !BF16.hardwareSupported ? .float32 : requested
    }
}

/// Row-major C = alpha·op(A)·op(B) + beta·C, with op(A): m×k, op(B): k×n, C: m×n. Leading dimensions default to
/// the packed row length of each operand as stored. `precision` picks OpenBLAS sgemm or COCRBF16's bf16 GEMM:
/// operands rounded to bf16 (nearest even) while packed, products accumulated in fp32 (AMX-BF16, AVX512-BF16 or
/// portable kernels, picked at run time), results independent of the thread count.
@inline(__always)
public func gemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
    b: UnsafePointer<Float>, ldb: Int? = nil,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil, precision: Precision = .float32
) {
    let (lda, ldb, ldc) = leadingDimensions(transA, transB, m, n, k, lda, ldb, ldc)
    guard precision == .float32 else {
        ocr_bf16_gemm(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    }
    cblas_sgemm(
        CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// `a.count` products of one shape, c[i] = alpha·op(a[i])·op(b[i]) + beta·c[i] (Winograd's 16 GEMMs). In bf16 each
/// product runs whole on one thread, the threads taking them in turn (`ocr_bf16_gemm_batch`: one fork-join for all,
/// the bits of `gemm`). In fp32 small products do the same, each on one-threaded OpenBLAS; larger ones run one
/// after the other, each on OpenBLAS's threads (`singleThreadedProductFlops`).
public func gemmBatch(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: [UnsafePointer<Float>], lda: Int? = nil, b: [UnsafePointer<Float>], ldb: Int? = nil,
    beta: Float = 0, c: [UnsafeMutablePointer<Float>], ldc: Int? = nil, precision: Precision = .float32
) {
    precondition(a.count == b.count && b.count == c.count, "gemmBatch: \(a.count), \(b.count), \(c.count) operands")
    guard precision == .float32 else {
        let (lda, ldb, ldc) = leadingDimensions(transA, transB, m, n, k, lda, ldb, ldc)
        withCArrays(a, b, c) { a, b, c in
            ocr_bf16_gemm_batch(transA ? 1 : 0, transB ? 1 : 0, a.count, m, n, k, alpha, a.baseAddress, lda,
                                b.baseAddress, ldb, beta, c.baseAddress, ldc)
        }
        return
    }
    func products(_ first: Int, _ end: Int) {
        for i in first..<end {
            gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a[i], lda: lda, b: b[i],
                 ldb: ldb, beta: beta, c: c[i], ldc: ldc)
        }
    }
    let threads = BLAS.threads
    guard threads > 1, a.count >= threads, 2 * Double(m) * Double(n) * Double(k) < singleThreadedProductFlops else {
        return products(0, a.count)
    }
    openblas_set_num_threads(1)   // for these calls only: each product whole on one of our threads
    parallelChunks(a.count, products)
    openblas_set_num_threads(Int32(threads))
}

/// fp32 products below this many flops run whole on one thread each in `gemmBatch`: R18-D8's Winograd products up
/// to layer4 (512×256×512 per image, 1.3e8), not the OCR bottleneck's (2.7e8). Measured on a 2-core Zen 3 VM (AVX2,
/// OpenBLAS's Zen kernel), R18-D8 256² batch 2 fp32 `bench --profile`, 4 alternating rounds: Winograd GEMMs
/// 974–1055 → 813–925 ms per step, the step 1495–1638 → 1309–1525 ms, lower in every round. On AVX-512 machines
/// one-threaded OpenBLAS was slower on large products (Zen 5, large Winograd shapes: 268 → 180 GFLOP/s), hence
/// the bound.
let singleThreadedProductFlops = 2e8

/// The textbook triple loop (accumulating in double) that `gemm` must agree with; tests only.
public func naiveGemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
    beta: Float = 0, c: UnsafeMutablePointer<Float>
) {
    for i in 0..<m {
        for j in 0..<n {
            var s = 0.0
            for p in 0..<k {
                let av = transA ? a[p * m + i] : a[i * k + p]
                let bv = transB ? b[j * k + p] : b[p * n + j]
                s += Double(av) * Double(bv)
            }
            c[i * n + j] = alpha * Float(s) + (beta == 0 ? 0 : beta * c[i * n + j])
        }
    }
}

public enum BLAS {
    /// The OpenBLAS kernel family in use (e.g. "Haswell", "SkylakeX"); benchmarks print it.
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// Threads for OpenBLAS, the bf16 GEMM and our own parallel kernels alike.
    public static func setThreads(_ n: Int) { restore(ThreadCounts(blas: n, bf16: n, workers: n)) }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// The three counts `setThreads` sets, as they stand. A test that varies the threads puts them back
    /// (`restore`), so that the tests after it run as the process started: OpenBLAS on every core, the bf16 GEMM and
    /// our kernels on one. (Float32 whole-model results differ in rounding with OpenBLAS's thread count.)
    public struct ThreadCounts {
        let blas, bf16, workers: Int
    }

    public static var threadCounts: ThreadCounts {
        ThreadCounts(blas: threads, bf16: Int(ocr_bf16_get_threads()), workers: Parallelism.workers)
    }

    public static func restore(_ counts: ThreadCounts) {
        openblas_set_num_threads(Int32(counts.blas))
        ocr_bf16_set_threads(Int32(counts.bf16))
        Parallelism.workers = counts.workers
    }
}

/// The row lengths of op(A), op(B) and C as stored, where the caller gave none.
@inline(__always)
/// The batched calls' operand lists as the C arrays of pointers they take (`const float *const *` and so on).
func withCArrays<B>(_ a: [UnsafePointer<Float>], _ b: [UnsafePointer<B>], _ c: [UnsafeMutablePointer<Float>],
                    _ body: (UnsafeBufferPointer<UnsafePointer<Float>?>, UnsafeBufferPointer<UnsafePointer<B>?>,
                             UnsafeBufferPointer<UnsafeMutablePointer<Float>?>) -> Void) {
    a.map(Optional.some).withUnsafeBufferPointer { a in
        b.map(Optional.some).withUnsafeBufferPointer { b in
            c.map(Optional.some).withUnsafeBufferPointer { c in body(a, b, c) }
        }
    }
}

func leadingDimensions(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ lda: Int?, _ ldb: Int?,
                       _ ldc: Int?) -> (Int, Int, Int) {
    (lda ?? (transA ? m : k), ldb ?? (transB ? k : n), ldc ?? n)
}

public enum BF16 {
    /// The kernel that runs ("amx-bf16 32x32", "avx512bf16 12x32", "avx512bf16 12x32 kc512" with an L1 of 48 KB
    /// or more, or "portable 4x16"); benchmarks print it.
    public static var kernelName: String { String(cString: ocr_bf16_kernel_name()) }
    /// Whether the CPU has a bf16 dot-product instruction (AVX512-BF16 or AMX-BF16); without one, bf16 is slower
    /// than fp32 and callers should stay in fp32.
    public static var hardwareSupported: Bool { ocr_bf16_supported() != 0 || ocr_bf16_amx_supported() != 0 }
    /// Whether the bf16 GEMM runs on a matrix engine (the AMX-BF16 tiles), which changes which convolution
    /// algorithm is fastest.
    public static let hasMatrixEngine = kernelName.hasPrefix("amx")
    /// x rounded to bf16 and back (nearest even; fp32 denormals flush to zero as the hardware conversion does).
    public static func round(_ x: Float) -> Float { ocr_bf16_round(x) }

    /// Floats of caller memory that hold an m×k left operand packed for the bf16 GEMM (`packA`).
    public static func packedFloats(m: Int, k: Int) -> Int { (ocr_bf16_packed_a_size(m, k) + 3) / 4 }

    /// The m×k row-major matrix `a` rounded and laid out as the kernel of this process reads its left operand.
    public static func packA(m: Int, k: Int, a: UnsafePointer<Float>, into packed: UnsafeMutablePointer<Float>) {
        ocr_bf16_pack_a(0, m, k, a, k, packed)
    }

    /// c (m×n, row stride n) = A·col(image), or A·col(image)ᵀ when `transB`, with col the im2col matrix of the image
    /// for `g` ((C·kh·kw)×(Ho·Wo)) and A packed by `packA`: the product `gemm` gives on `im2col`'s matrix, bit for bit,
    /// without that matrix ever being stored (`ocr_bf16_gemm_im2col`).
    public static func gemmIm2col(transB: Bool = false, m: Int, packedA: UnsafePointer<Float>, geometry g: ConvGeometry,
                                  image: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
        var geometry = g.bf16
        let n = transB ? g.columnRows : g.outPixels
        ocr_bf16_gemm_im2col(transB ? 1 : 0, m, 1, packedA, &geometry, image, 0, c, n)
    }

    /// Whether `convolve` runs a convolution of geometry `g` into `outChannels` outputs here: on the AMX kernel, at
    /// stride 1.
    public static func convolves(outChannels: Int, geometry g: ConvGeometry) -> Bool {
        var geometry = g.bf16
        return ocr_bf16_conv_available(outChannels, &geometry) != 0
    }

    /// Floats of caller memory that `convolve` needs: the packed kernel, and the image's bf16 planes.
    public static func convolutionFloats(outChannels: Int, geometry g: ConvGeometry) -> (kernel: Int, planes: Int) {
        var geometry = g.bf16
        return ((ocr_bf16_conv_packed_kernel_size(outChannels, &geometry) + 3) / 4,
                (ocr_bf16_conv_planes_size(outChannels, &geometry) + 3) / 4)
    }

    /// The kernel (outChannels × C × kh × kw) rounded and laid out for `convolve`; `flipped`: the input gradient's
    /// kernel W̃[o, c, i, j] = w[c, o, kh−1−i, kw−1−j] of a forward kernel w (C × outChannels × kh × kw).
    public static func packConvolutionKernel(outChannels: Int, geometry g: ConvGeometry, weights: UnsafePointer<Float>,
                                             flipped: Bool = false, into packed: UnsafeMutablePointer<Float>) {
        var geometry = g.bf16
        ocr_bf16_conv_pack_kernel(outChannels, &geometry, weights, flipped ? 1 : 0, packed)
    }

    /// y (outChannels × Ho × Wo) = the convolution of `image` with the kernel packed by `packConvolutionKernel`, run
    /// directly on the AMX tiles with no column matrix (`ocr_bf16_conv`); `planes` is scratch. Only where `convolves`.
    public static func convolve(outChannels: Int, packedKernel: UnsafePointer<Float>, geometry g: ConvGeometry,
                                image: UnsafePointer<Float>, planes: UnsafeMutablePointer<Float>,
                                y: UnsafeMutablePointer<Float>) {
        var geometry = g.bf16
        ocr_bf16_conv(outChannels, packedKernel, &geometry, image, planes, y)
    }

    /// `gemmBatch` in bf16 with each B_i given as bf16 bits (`pack`'s rounding), stored as op(B_i) would be in fp32:
    /// the bits the fp32 operands that round to them give (`ocr_bf16_gemm_batch_bf16_b`).
    public static func gemmBatch(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                                 a: [UnsafePointer<Float>], lda: Int? = nil, bits b: [UnsafePointer<UInt16>],
                                 ldb: Int? = nil, c: [UnsafeMutablePointer<Float>], ldc: Int? = nil) {
        precondition(a.count == b.count && b.count == c.count, "gemmBatch: \(a.count), \(b.count), \(c.count) operands")
        let (lda, ldb, ldc) = leadingDimensions(transA, transB, m, n, k, lda, ldb, ldc)
        withCArrays(a, b, c) { a, b, c in
            ocr_bf16_gemm_batch_bf16_b(transA ? 1 : 0, transB ? 1 : 0, a.count, m, n, k, 1, a.baseAddress, lda,
                                       b.baseAddress, ldb, 0, c.baseAddress, ldc)
        }
    }

    /// Winograd's input transform of one channel of one sub-image (`padded`: (2·blockRows + 2) × (2·blockCols + 2),
    /// zero-bordered) into 16 matrices of bf16 bits `stride` apart, block (u, v) at u·blockCols + v: the fp32
    /// transform's values rounded as `pack` rounds (`ocr_bf16_winograd_input`).
    public static func winogradInput(padded: UnsafePointer<Float>, blockRows: Int, blockCols: Int,
                                     into out: UnsafeMutablePointer<UInt16>, stride: Int) {
        ocr_bf16_winograd_input(padded, blockRows, blockCols, out, stride)
    }

    /// Winograd's output transform of one channel of one sub-image: `outputs` (2·blockRows × 2·blockCols) = Aᵀ M A
    /// per block from 16 product matrices `stride` apart (`ocr_bf16_winograd_output`).
    public static func winogradOutput(_ m: UnsafePointer<Float>, stride: Int, blockRows: Int, blockCols: Int,
                                      into outputs: UnsafeMutablePointer<Float>) {
        ocr_bf16_winograd_output(m, stride, blockRows, blockCols, outputs)
    }

    /// Winograd's output-gradient transform of one channel of one sub-image: 16 matrices `stride` apart = A dŶ Aᵀ
    /// per 2×2 block of `dy` (2·blockRows × 2·blockCols, zero past the sub-image; `ocr_bf16_winograd_output_gradient`).
    public static func winogradOutputGradient(_ dy: UnsafePointer<Float>, blockRows: Int, blockCols: Int,
                                              into z: UnsafeMutablePointer<Float>, stride: Int) {
        ocr_bf16_winograd_output_gradient(dy, blockRows, blockCols, z, stride)
    }

    /// Floats of scratch `convolutionWeightGradient` needs.
    public static func weightGradientFloats(outChannels: Int, geometry g: ConvGeometry) -> Int {
        var geometry = g.bf16
        return (ocr_bf16_conv_weight_gradient_scratch_size(outChannels, &geometry) + 3) / 4
    }

    /// dw (outChannels × C × kh × kw, stored) = the weight gradient of one image of that convolution, dy·colᵀ, on the
    /// AMX tiles with no column matrix (`ocr_bf16_conv_weight_gradient`). Only where `convolves`.
    public static func convolutionWeightGradient(outChannels: Int, geometry g: ConvGeometry,
                                                 image: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                                 scratch: UnsafeMutablePointer<Float>,
                                                 dw: UnsafeMutablePointer<Float>) {
        var geometry = g.bf16
        ocr_bf16_conv_weight_gradient(outChannels, &geometry, image, dy, scratch, dw)
    }

    /// `values` as bf16 bits, rounded as `round` does, into `bits` (the same count).
    public static func pack(_ values: UnsafeBufferPointer<Float>, into bits: UnsafeMutableBufferPointer<UInt16>) {
        precondition(bits.count == values.count)
        ocr_bf16_pack(values.baseAddress, bits.baseAddress, values.count)
    }

    public static func unpack(_ bits: UnsafeBufferPointer<UInt16>, into values: UnsafeMutableBufferPointer<Float>) {
        precondition(bits.count == values.count)
        ocr_bf16_unpack(bits.baseAddress, values.baseAddress, bits.count)
    }
}

extension ConvGeometry {
    /// The same geometry as the bf16 kernels' C struct.
    var bf16: ocr_bf16_conv_geometry {
        ocr_bf16_conv_geometry(channels: channels, height: height, width: width, kernel_h: kernelH, kernel_w: kernelW,
                               stride: stride, padding: padding, dilation: dilation)
    }
}
