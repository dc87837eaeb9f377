import Dispatch

/// Runs `body(chunkStart, chunkEnd)` over `0..<count` split into at most `maxChunks` contiguous ranges, in parallel
/// when the work is large enough to pay for the dispatch. Used by the memory-bound kernels (im2col, BN, resize)
/// that would otherwise run on one core while OpenBLAS uses all of them.
@inline(__always)
public func parallelChunks(_ count: Int, minimumPerChunk: Int = 1, _ body: (Int, Int) -> Void) {
    let chunks = Swift.min(Parallelism.workers, Swift.max(1, count / Swift.max(minimumPerChunk, 1)))
    if chunks <= 1 {
        body(0, count)
        return
    }
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        let start = count * c / chunks
        let end = count * (c + 1) / chunks
        if start < end { body(start, end) }
    }
}

/// How many threads the non-BLAS kernels may use; set together with OpenBLAS's thread count.
public enum Parallelism {
    nonisolated(unsafe) public static var workers: Int = 1
}
