import Foundation

/// Float storage of tensors, pooled gradients and the layers' workspace. A block of at least one huge page (2 MB)
/// is aligned to one and marked `MADV_HUGEPAGE`: Debian's kernel backs memory with transparent huge pages only on
/// request (`/sys/kernel/mm/transparent_hugepage/enabled` is `madvise`), and with 4 KB pages a GEMM that walks C or
/// an im2col column matrix by rows 32 KB apart (an 8192-pixel map) touches a new page, and misses the TLB, on every
/// row. Measured alternating: the AMX GEMM alone 1.0-1.7× by shape; R50-D8 512×1024 bf16 steps 0.212 → 0.230 img/s
/// (medians of 3), fp32 and R18-D8 256² (4 KB rows) unchanged within noise. Smaller blocks are 64-byte aligned, for
/// the kernels' vector loads. Neither changes a result.
public enum FloatStorage {
    static let hugePageBytes = 2 << 20

    public static func allocate(capacity: Int) -> UnsafeMutablePointer<Float> {
        let bytes = Swift.max(capacity, 1) * MemoryLayout<Float>.stride
        let huge = bytes >= hugePageBytes
        var block: UnsafeMutableRawPointer?
        guard posix_memalign(&block, huge ? hugePageBytes : 64, bytes) == 0, let block else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        #if os(Linux)
        // Whole huge pages of the block only: the advice must not reach a neighbouring allocation. A kernel without
        // transparent huge pages refuses it, which costs nothing.
        if huge { _ = madvise(block, bytes / hugePageBytes * hugePageBytes, MADV_HUGEPAGE) }
        #endif
        return block.bindMemory(to: Float.self, capacity: Swift.max(capacity, 1))
    }

    public static func deallocate(_ storage: UnsafeMutablePointer<Float>) {
        free(storage)
    }
}
