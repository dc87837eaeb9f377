import OCRTensor

/// Batched matrix product C_b = op(A_b)·op(B_b) over a leading batch axis; the object-context attention and the
/// spatial gather are made of these. A: B×(rows×cols as stored), op = transpose when the flag is set.
/// Shapes: op(A_b): m×k, op(B_b): k×n → C: B×m×n (stored as `outputShape`, which must hold B·m·n elements).
/// Backward runs in the precision of its forward.
public final class BatchedMatMul {
    public let transA: Bool, transB: Bool
    public let alpha: Float
    /// The forward's operands, for backward; A as bf16 bits once `keepA` replaced it.
    private var a: Tensor?, b: Tensor?
    private var aBits: BF16Activation?
    private var dims = (batch: 0, m: 0, n: 0, k: 0)
    private var precision = Precision.float32

    public init(transA: Bool = false, transB: Bool = false, alpha: Float = 1) {
        self.transA = transA; self.transB = transB; self.alpha = alpha
    }

    public func forward(_ a: Tensor, _ b: Tensor, batch: Int, m: Int, n: Int, k: Int, outputShape: [Int],
                        precision: Precision = .float32) -> Tensor {
        let timing = Profiler.begin(); defer { Profiler.end("BatchedMatMul.forward", timing) }
        precondition(a.count == batch * m * k && b.count == batch * k * n,
                     "matmul of \(a.shape) and \(b.shape) as \(batch)×(\(m)×\(k))·(\(k)×\(n))")
        self.a = a; self.b = b
        aBits = nil
        dims = (batch, m, n, k)
        self.precision = precision
        let c = Tensor.transient(shape: outputShape)
        precondition(c.count == batch * m * n)
        Profiler.countForwardFlops(2 * batch * m * n * k)
        for i in 0..<batch {
            gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a.data + i * m * k,
                 b: b.data + i * k * n, c: c.data + i * m * n, precision: precision)
        }
        return c
    }

    /// Keeps the last forward's A as `bits` (its values rounded) instead of fp32, which can then go: in bf16 the
    /// backward's GEMMs round A to those very values (`BF16Activation`).
    public func keepA(_ bits: BF16Activation) {
        precondition(precision == .bfloat16 && bits.shape == a?.shape,
                     "matmul: bf16 A \(bits.shape) kept for fp32 A \(a?.shape ?? [])")
        a = nil
        aBits = bits
    }

    /// dC → (dA, dB) with the shapes of A and B: dop(A) = α·dC·op(B)ᵀ, dop(B) = α·op(A)ᵀ·dC.
    public func backward(_ dc: Tensor) -> (Tensor, Tensor) {
        let timing = Profiler.begin(); defer { Profiler.end("BatchedMatMul.backward", timing) }
        guard let a = a ?? aBits?.expanded(), let b else { preconditionFailure("matmul backward before forward") }
        defer { (self.a, aBits, self.b) = (nil, nil, nil) }   // saved for this backward alone (`Tensor.transient`)
        let (batch, m, n, k) = dims
        let da = Tensor.transient(shape: a.shape)
        let db = Tensor.transient(shape: b.shape)
        for i in 0..<batch {
            let (pa, pb, pc) = (a.data + i * m * k, b.data + i * k * n, dc.data + i * m * n)
            let (pda, pdb) = (da.data + i * m * k, db.data + i * k * n)
            if transA {   // A stored k×m: dA = α·op(B)·dCᵀ
                gemm(transA: transB, transB: true, m: k, n: m, k: n, alpha: alpha, a: pb, b: pc, c: pda,
                     precision: precision)
            } else {      // A stored m×k: dA = α·dC·op(B)ᵀ
                gemm(transA: false, transB: !transB, m: m, n: k, k: n, alpha: alpha, a: pc, b: pb, c: pda,
                     precision: precision)
            }
            if transB {   // B stored n×k: dB = α·dCᵀ·op(A)
                gemm(transA: true, transB: transA, m: n, n: k, k: m, alpha: alpha, a: pc, b: pa, c: pdb,
                     precision: precision)
            } else {      // B stored k×n: dB = α·op(A)ᵀ·dC
                gemm(transA: !transA, transB: false, m: k, n: n, k: m, alpha: alpha, a: pa, b: pc, c: pdb,
                     precision: precision)
            }
        }
        return (da, db)
    }
}
