import OCRNN

/// Synchronised batch norm over all ranks, plugged into the BatchNorm seam. Forward: every rank's per-channel
/// (count, mean, M2) are allgathered and merged in rank order with `mergeStatistics` (Chan's update in double), so all
/// ranks get bit-identical statistics; backward: the per-channel sums (Σdy, Σdy·(x−μ)) are summed. A rank with an
/// empty batch joins both collectives with count 0.
public final class SyncBatchNormReducer: ReplicaReducer {
    let comm: Communicator

    public init(comm: Communicator) { self.comm = comm }

    public func mergeBatchStatistics(count: inout Double, mean: UnsafeMutableBufferPointer<Double>,
                                     m2: UnsafeMutableBufferPointer<Double>, layer: String) {
        let channels = mean.count
        // Per rank: [count, mean_0..C−1, M2_0..C−1]
        var local = [Double](repeating: 0, count: 1 + 2 * channels)
        local[0] = count
        for c in 0..<channels { local[1 + c] = mean[c]; local[1 + channels + c] = m2[c] }
        var all = [Double](repeating: 0, count: local.count * comm.size)
        local.withUnsafeBufferPointer { send in
            all.withUnsafeMutableBufferPointer { comm.allgather(send, into: $0, phase: "sync BN \(layer) statistics") }
        }
        var total = 0.0
        for c in 0..<channels { mean[c] = 0; m2[c] = 0 }
        for r in 0..<comm.size {
            let base = r * local.count
            let n = all[base]
            if n == 0 { continue }
            for c in 0..<channels {
                _ = mergeStatistics(total: total, mean: &mean[c], m2: &m2[c], count: n, partMean: all[base + 1 + c],
                                    partM2: all[base + 1 + channels + c])
            }
            total += n
        }
        count = total
    }

    public func sumAcrossReplicas(_ values: UnsafeMutableBufferPointer<Double>, layer: String) {
        comm.allreduceSum(values, phase: "sync BN \(layer) backward sums")
    }
}
