import CBLAS

/// Row-major C = alpha·op(A)·op(B) + beta·C, with op(A): m×k, op(B): k×n, C: m×n. Leading dimensions default to
/// the packed row length of each operand as stored.
@inline(__always)
public func gemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
    b: UnsafePointer<Float>, ldb: Int? = nil,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil
) {
    let lda = lda ?? (transA ? m : k)
    let ldb = ldb ?? (transB ? k : n)
    let ldc = ldc ?? n
    cblas_sgemm(
        CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

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

    public static func setThreads(_ n: Int) {
        openblas_set_num_threads(Int32(n))
        Parallelism.workers = n
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }
}
