import Foundation
import OCRNN
import OCRTensor

/// Start-of-training agreement and the periodic drift check.
public enum ReplicaConsistency {
    /// A cheap order-sensitive hash of a float buffer's bits (64-bit multiply-xor over 32-bit words).
    public static func hash(_ t: Tensor) -> UInt64 {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15
        let words = UnsafeRawPointer(t.data).assumingMemoryBound(to: UInt32.self)
        for i in 0..<t.count { h = (h ^ UInt64(words[i])) &* 0xff51_afd7_ed55_8ccd; h ^= h >> 29 }
        return h
    }

    /// Every rank must hold the same parameter and buffer names, shapes and order; on a mismatch every rank throws
    /// the same error, naming the first key where the lowest differing rank differs from rank 0 (that rank sends its
    /// detail to all: whichever rank's error reaches the user first, mpirun stopping the others, names the key).
    public static func checkLayout(_ store: ParameterStore, comm: Communicator) throws {
        let lines = store.stateLayoutLines
        let mine = fnv1a(lines.joined(separator: "\n"))
        let all = comm.allgather(mine, phase: "parameter layout check")
        guard Set(all).count > 1 else { return }
        let rootLines = comm.broadcast(lines.joined(separator: "\n"), root: 0, phase: "parameter layout check").split(separator: "\n").map(String.init)
        let differing = all.enumerated().filter { $0.element != all[0] }.map { "\($0.offset)" }
        var detail = "ranks \(differing.joined(separator: ", ")) differ from rank 0"
        if let i = zip(lines, rootLines).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
            detail += "; first difference at key \(i): rank \(comm.rank) has '\(lines[i])', rank 0 has '\(rootLines[i])'"
        } else if lines.count != rootLines.count {
            let i = min(lines.count, rootLines.count)
            detail += "; rank \(comm.rank) has \(lines.count) keys, rank 0 has \(rootLines.count) (first extra: '"
                + (lines.count > i ? lines[i] : rootLines[i]) + "')"
        }
        let reporter = all.firstIndex { $0 != all[0] }!
        detail = comm.broadcast(detail, root: reporter, phase: "parameter layout check")
        throw CommunicatorError("parameter layout mismatch across ranks: \(detail)")
    }

    /// Copies rank 0's parameters, buffers and counters to every rank.
    public static func broadcastState(_ store: ParameterStore, comm: Communicator) {
        guard comm.size > 1 else { return }
        comm.broadcast(UnsafeMutableBufferPointer(start: store.values.data, count: store.values.count),
                       phase: "broadcast of rank 0's parameters")
        broadcastBuffers(store, comm: comm)
    }

    /// Copies rank 0's buffers and counters (BN running statistics, num_batches_tracked) to every rank, as DDP's
    /// `broadcast_buffers`. Needed only without sync BN, where each rank's running statistics follow its own
    /// batches; training normalises with batch statistics, so broadcasting before evaluation and saving gives the
    /// model DDP would have, with one broadcast per evaluation instead of one per step.
    public static func broadcastBuffers(_ store: ParameterStore, comm: Communicator) {
        guard comm.size > 1 else { return }
        for entry in store.entries {
            switch entry {
            case .buffer(let b):
                comm.broadcast(UnsafeMutableBufferPointer(start: b.value.data, count: b.value.count),
                               phase: "broadcast of rank 0's \(b.name)")
            case .counter(let c):
                var v = c.value
                withUnsafeMutableBytes(of: &v) { comm.broadcast($0, root: 0, phase: "broadcast of rank 0's \(c.name)") }
                c.value = v
            case .parameter:
                break
            }
        }
    }

    /// Throws when the ranks' weights are not bit-identical (they must be after every optimizer step).
    public static func checkWeightsAgree(_ store: ParameterStore, comm: Communicator, iteration: Int) throws {
        guard comm.size > 1 else { return }
        let all = comm.allgather(hash(store.values), phase: "weight agreement check")
        guard Set(all).count == 1 else {
            let groups = Dictionary(grouping: all.indices, by: { all[$0] }).values.map { $0.map(String.init).joined(separator: ",") }
            throw CommunicatorError("weights diverged across ranks at iteration \(iteration): rank groups with "
                                    + "identical weights are [\(groups.sorted().joined(separator: "] ["))]")
        }
    }
}

extension ParameterStore {
    /// "key shape dtype" per state entry, the text whose hash ranks compare.
    var stateLayoutLines: [String] {
        entries.map { entry in
            switch entry {
            case .parameter(let p): "\(p.name) \(p.shape) F32"
            case .buffer(let b): "\(b.name) \(b.value.shape) F32"
            case .counter(let c): "\(c.name) [] I64"
            }
        }
    }
}
