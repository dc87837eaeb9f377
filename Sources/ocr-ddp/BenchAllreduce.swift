import ArgumentParser
import Foundation
import OCRDistributed
import OCRTensor
import OCRTrain

/// `ocr-ddp bench-allreduce`: times the gradient all-reduce alone (as training runs it on one bucket) over buffers
/// of the given sizes, and checks its sums against float64 ones: one JSON line per size. Run it under the launcher
/// of the cluster to measure its latency (small sizes) and bandwidth (large ones); the scaling model
/// (Tools/scaling_model.py) is fitted from these lines.
struct BenchAllreduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-allreduce",
        abstract: "Time and check the gradient all-reduce on buffers of given sizes; one JSON line per size.")

    @Option(help: "Buffer sizes in bytes of fp32 values, comma separated, with optional K or M (2^10, 2^20), e.g. 4,4K,1M,64M.")
    var sizes = "4,64,1K,16K,256K,1M,4M,16M,64M"
    @Option(help: "What the values are sent as: fp32, or bf16 (summed in fp32).")
    var gradientPayload: GradientCommunication.Payload = .fp32
    @Option(help: "flat, or hierarchical (inside each machine first, then across machines).")
    var allreduce: GradientCommunication.Topology = .flat
    @Option(help: "polling: nonblocking collectives waited for on the calling thread (MPI_THREAD_FUNNELED), as train's default; thread: blocking ones (MPI_THREAD_MULTIPLE), as the communication thread runs them.")
    var overlap: GradientSynchronizer.Overlap = .polling
    @Option(help: "Timed all-reduces per size (median reported).") var repeats = 10
    @Option(help: "Untimed all-reduces per size first.") var warmup = 2

    static func parseBytes(_ text: Substring) -> Int? {
        let multiplier = text.hasSuffix("K") ? 1 << 10 : text.hasSuffix("M") ? 1 << 20 : 1
        guard let n = Int(multiplier == 1 ? text : text.dropLast()), n > 0 else { return nil }
        return n * multiplier
    }

    func run() throws {
        guard repeats >= 1 && warmup >= 0 else {
            throw ConfigError("--repeats \(repeats) --warmup \(warmup): need repeats ≥ 1, warmup ≥ 0")
        }
        let byteSizes = try sizes.split(separator: ",").map { part -> Int in
            guard let bytes = Self.parseBytes(part), bytes % 4 == 0, bytes <= 1 << 30 else {
                throw ConfigError("--sizes '\(part)': expected a positive multiple of 4 bytes up to 1G, e.g. 4K or 64M")
            }
            return bytes
        }
        let communication = GradientCommunication(overlap: overlap, payload: gradientPayload, topology: allreduce)
        try withProcessGroup(threads: communication.threadSupport) { comm in
            let reducer = BucketAllreduce(comm: comm, communication: communication)
            if let note = reducer.fallbackNote, comm.isRoot { FileHandle.standardError.write(Data("warning: \(note)\n".utf8)) }
            for bytes in byteSizes {
                let line = measure(bytes / 4, reducer, comm)
                guard comm.isRoot else { continue }
                print(String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]),
                             as: UTF8.self))
            }
        }
    }

    /// Rank r's value i: a fixed stream per rank, so that every rank can recompute what the others hold.
    static func fill(_ values: UnsafeMutableBufferPointer<Float>, rank: Int) {
        var rng = SplitMix64(seed: 0xA11, UInt64(rank))
        for i in values.indices { values[i] = Float(rng.normal()) }
    }

    func measure(_ count: Int, _ reducer: BucketAllreduce, _ comm: Communicator) -> [String: Any] {
        let values = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        defer { values.deallocate() }
        var seconds: [Double] = []
        for i in 0..<(warmup + repeats) {
            Self.fill(values, rank: comm.rank)
            comm.barrier(phase: "all-reduce benchmark start")
            let start = DispatchTime.now().uptimeNanoseconds
            let phase = "all-reduce benchmark \(count * 4) bytes"
            if overlap == .thread {
                reducer.reduce(values, bucket: 0, phase: phase)
            } else {
                reducer.start(values, bucket: 0, phase: phase).wait()
            }
            // The slowest rank's time: a collective is done when it is done everywhere.
            let elapsed = comm.maximum(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9,
                                       phase: "all-reduce benchmark time")
            if i >= warmup { seconds.append(elapsed) }
        }
        // The last result against the float64 sum of what every rank held, relative to the sum of magnitudes
        // (the scale of the rounding: a bf16 payload rounds each value and the sum once, ≤ 2^-8 of it).
        var exact = [Double](repeating: 0, count: count), magnitude = [Double](repeating: 0, count: count)
        let other = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        defer { other.deallocate() }
        for r in 0..<comm.size {
            Self.fill(other, rank: r)
            for i in 0..<count {
                exact[i] += Double(other[i])
                magnitude[i] += Double(abs(other[i]))
            }
        }
        var error = 0.0
        for i in 0..<count { error = max(error, abs(Double(values[i]) - exact[i]) / magnitude[i]) }
        error = comm.maximum(error, phase: "all-reduce benchmark error")
        // Every rank must hold the same bits: rank 0's checksum against everyone's.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for v in values { hash = (hash ^ UInt64(v.bitPattern)) &* 0x100_0000_01b3 }
        let hashes = comm.allgather(hash, phase: "all-reduce benchmark checksum")
        let median = seconds.sorted()[seconds.count / 2]
        let p = Double(comm.size)
        return [
            "bytes": count * 4, "ranks": comm.size, "gradient_payload": gradientPayload.rawValue,
            "overlap": overlap.rawValue,
            "allreduce": reducer.topology.rawValue,
            "ms": median * 1e3, "min_ms": (seconds.min() ?? 0) * 1e3,
            // nccl-tests' figures: the buffer's fp32 bytes over the time, and that times 2(p−1)/p, what a ring
            // moves per rank (comparable with the link rate whatever the rank count).
            "algbw_gbit": Double(count * 32) / median / 1e9,
            "busbw_gbit": Double(count * 32) / median / 1e9 * 2 * (p - 1) / max(p, 1),
            "max_error_per_magnitude": error,
            "identical_on_all_ranks": Set(hashes).count == 1,
        ]
    }
}
