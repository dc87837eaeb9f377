import Foundation
import OCRTensor

/// How gradient buckets travel between ranks: `model_wrapper_cfg` in the config (docs/INTERFACE.md). The default,
/// a flat fp32 all-reduce polled between layers with PyTorch DDP's bucket sizes, is the exact one.
public struct GradientCommunication: Sendable, Equatable {
    /// What a bucket's values are sent as. `bf16` halves the bytes; the sums are still taken in fp32.
    public enum Payload: String, CaseIterable, Sendable { case fp32, bf16 }
    /// `hierarchical`: sum inside each machine first, so only 1/(ranks per machine) of the bucket crosses the
    /// network per rank.
    public enum Topology: String, CaseIterable, Sendable { case flat, hierarchical }

    public var overlap: GradientSynchronizer.Overlap
    public var payload: Payload
    public var topology: Topology
    /// PyTorch DDP's bucket sizes: a small first bucket so communication starts early, then `bucket_cap_mb`.
    public var firstBucketBytes: Int
    public var bucketBytes: Int

    public init(overlap: GradientSynchronizer.Overlap = .polling, payload: Payload = .fp32, topology: Topology = .flat,
                firstBucketBytes: Int = 1 << 20, bucketBytes: Int = 25 << 20) {
        self.overlap = overlap
        self.payload = payload
        self.topology = topology
        self.firstBucketBytes = firstBucketBytes
        self.bucketBytes = bucketBytes
    }

    /// Only the thread overlap calls MPI from a second thread.
    public var threadSupport: ThreadSupport { overlap == .thread ? .multiple : .funneled }
}

/// Sums one gradient bucket over every rank as a chain of nonblocking collectives (so the polling overlap can move
/// it forward between layers), or blocking on the communication thread:
/// - **flat**: the pairwise reduce-scatter and allgather (`pairwise`): each rank sends (p−1)/p of the bucket twice,
///   as a ring does, and the sums are fp32 in rank order. With a bf16 payload every value is rounded to bf16 on the
///   way, half the bytes, and the result carries two bf16 roundings however many ranks add up (PyTorch's
///   bf16_compress_hook adds in bf16, so its error grows with the ranks). Blocking fp32 is one MPI_Allreduce.
/// - **hierarchical**: an fp32 reduce-scatter among the ranks of a machine leaves each with its part of the
///   machine's sum; that part is summed across machines as above among the ranks with the same local rank; an
///   allgather inside the machine hands every rank the whole bucket.
/// Every rank ends with the same values.
///
/// Several buckets are in flight at once, and MPI needs every rank to start the collectives of a communicator in the
/// same order. So each stage has a communicator of its own, and a bucket starts a stage only after the bucket before
/// it has started that stage (`StagedCollective.predecessor`): every stage's communicator then sees the buckets in
/// bucket order on every rank, however their progress interleaves.
public final class BucketAllreduce {
    let communication: GradientCommunication
    /// One communicator per stage, in stage order.
    private let stageComms: [Communicator]
    /// The hierarchical topology's machine split (the machine's rank and size), nil when flat.
    private let node: (rank: Int, size: Int)?
    /// Buffers of each bucket, kept from step to step.
    private var scratch: [Int: Scratch] = [:]
    /// The last bucket started, which the next one follows stage by stage.
    private var last: StagedCollective?

    /// Why the requested topology could not be used (logged by the caller), nil when it is.
    public let fallbackNote: String?
    /// The topology in use: the requested one unless it fell back to flat.
    public var topology: GradientCommunication.Topology { fallbackNote == nil ? communication.topology : .flat }

    public init(comm: Communicator, communication: GradientCommunication) {
        self.communication = communication
        let split = communication.topology == .hierarchical && comm.size > 1 ? comm.nodeSplit() : nil
        fallbackNote = communication.topology == .hierarchical && comm.size > 1 && split == nil
            ? "hierarchical all-reduce needs the same number of ranks on every machine; using the flat one" : nil
        // The sum across ranks: an all-to-all and an allgather.
        func across(_ ranks: Communicator) -> [Communicator] { [ranks, ranks.duplicate()] }
        if let (machine, peers) = split {
            node = (machine.rank, machine.size)
            stageComms = [machine] + across(peers) + [machine.duplicate()]
        } else {
            node = nil
            stageComms = across(comm)
        }
    }

    /// Starts the sum of `values` (bucket `index`; `phase` names it for the watchdog). Buckets must be started in
    /// the same order on every rank.
    public func start(_ values: UnsafeMutableBufferPointer<Float>, bucket index: Int, phase: String) -> PendingCollective {
        let buffers = scratch[index] ?? Scratch()
        scratch[index] = buffers
        let stages: [() -> PendingCollective]
        if let node {
            let machine = stageComms[0], gather = stageComms[stageComms.count - 1]
            let counts = Self.partCounts(values.count, parts: node.size)
            let offset = counts[..<node.rank].reduce(0, +)
            let part = buffers.buffer(Float.self, counts[node.rank], slot: 0)
            let partOfValues = UnsafeMutableBufferPointer(rebasing: values[offset..<(offset + part.count)])
            stages = [{
                machine.startReduceScatterSum(UnsafeBufferPointer(values), into: part, counts: counts,
                                              phase: phase + " (reduce-scatter in the machine)")
            }] + acrossRanks(part, over: Array(stageComms[1..<(stageComms.count - 1)]), buffers,
                             phase: phase + " (across machines)")
              + [{
                _ = partOfValues.update(fromContentsOf: part)
                return gather.startAllgather(UnsafeMutableRawBufferPointer(values), byteCounts: counts.map { $0 * 4 },
                                             phase: phase + " (allgather in the machine)")
            }]
        } else {
            stages = acrossRanks(values, over: stageComms, buffers, phase: phase)
        }
        let collective = StagedCollective(stages, after: index == 0 ? nil : last)
        last = collective
        return collective
    }

    /// The whole sum, blocking (the communication thread's way). Flat fp32 is one MPI_Allreduce: Open MPI's tuned
    /// blocking algorithms move large buffers faster than its MPI_Iallreduce (README "Scaling").
    public func reduce(_ values: UnsafeMutableBufferPointer<Float>, bucket index: Int, phase: String) {
        if node == nil && communication.payload == .fp32 {
            stageComms[0].allreduceSum(values, phase: phase)
        } else {
            start(values, bucket: index, phase: phase).wait()
        }
    }

    /// The stages that sum `values` in place over the ranks of `comms` (an all-to-all's and an allgather's
    /// communicators): the pairwise reduce-scatter and allgather, in the configured payload.
    private func acrossRanks(_ values: UnsafeMutableBufferPointer<Float>, over comms: [Communicator], _ buffers: Scratch,
                             phase: String) -> [() -> PendingCollective] {
        communication.payload == .bf16
            ? pairwise(values, comms, buffers, BF16Wire.self, phase: phase + " (bf16")
            : pairwise(values, comms, buffers, FP32Wire.self, phase: phase + " (fp32")
    }

    /// The bucket, encoded for the wire, is cut into one block per rank; an all-to-all hands block r of every rank
    /// to rank r, which adds them in fp32 in rank order and encodes the sum once; an allgather hands every rank
    /// every sum. The same bytes per rank as a ring (2(p−1)/p of the bucket), as a nonblocking collective that
    /// moves them at the blocking all-reduce's speed (MPI_Iallreduce reached half of it: README "Scaling").
    private func pairwise<Wire: WireFormat>(_ values: UnsafeMutableBufferPointer<Float>, _ comms: [Communicator],
                                            _ buffers: Scratch, _ wire: Wire.Type,
                                            phase: String) -> [() -> PendingCollective] {
        let (exchange, gather) = (comms[0], comms[1])
        let p = exchange.size
        let block = (values.count + p - 1) / p
        let wordBytes = MemoryLayout<Wire.Word>.stride
        let send = buffers.buffer(Wire.Word.self, p * block, slot: 1)
        let receive = buffers.buffer(Wire.Word.self, p * block, slot: 2)
        let sum = buffers.buffer(Float.self, block, slot: 3), term = buffers.buffer(Float.self, block, slot: 4)
        func words(_ buffer: UnsafeMutableBufferPointer<Wire.Word>, block r: Int) -> UnsafeBufferPointer<Wire.Word> {
            UnsafeBufferPointer(rebasing: buffer[(r * block)..<((r + 1) * block)])
        }
        return [{
            Wire.encode(UnsafeBufferPointer(values), into: UnsafeMutableBufferPointer(rebasing: send[..<values.count]))
            // The padding: zero bits are 0 in both formats.
            UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(send)[(values.count * wordBytes)...])
                .initializeMemory(as: UInt8.self, repeating: 0)
            return exchange.startAlltoall(UnsafeRawBufferPointer(send), into: UnsafeMutableRawBufferPointer(receive),
                                          bytesPerRank: block * wordBytes, phase: phase + " all-to-all)")
        }, {
            Wire.decode(words(receive, block: 0), into: sum)
            for r in 1..<p {
                Wire.decode(words(receive, block: r), into: term)
                for j in 0..<block { sum[j] += term[j] }
            }
            // Written where the allgather expects this rank's block.
            let own = exchange.rank * block
            Wire.encode(UnsafeBufferPointer(sum), into: UnsafeMutableBufferPointer(rebasing: send[own..<(own + block)]))
            return gather.startAllgather(UnsafeMutableRawBufferPointer(send),
                                         byteCounts: Array(repeating: block * wordBytes, count: p),
                                         phase: phase + " allgather)")
        }, {
            Wire.decode(UnsafeBufferPointer(rebasing: send[..<values.count]), into: values)
            return CompletedCollective()
        }]
    }

    /// `n` values cut into `parts` nearly equal parts (the first n % parts one longer), as MPI's examples do.
    static func partCounts(_ n: Int, parts: Int) -> [Int] {
        (0..<parts).map { n / parts + ($0 < n % parts ? 1 : 0) }
    }

    /// Buffers that outlive one step (MPI reads and writes them while the collective is in flight), by slot:
    /// 0 the machine's part, 1 and 2 the all-to-all's send and receive words, 3 the fp32 sums, 4 one decoded block.
    final class Scratch {
        private var slots: [Int: UnsafeMutableRawBufferPointer] = [:]

        func buffer<T>(_ type: T.Type, _ count: Int, slot: Int) -> UnsafeMutableBufferPointer<T> {
            let bytes = count * MemoryLayout<T>.stride
            if slots[slot]?.count != bytes {
                slots[slot]?.deallocate()
                slots[slot] = .allocate(byteCount: bytes, alignment: 64)
            }
            return slots[slot]!.bindMemory(to: T.self)
        }

        deinit { slots.values.forEach { $0.deallocate() } }
    }
}

/// How gradient values travel in the pairwise all-reduce (`encode` and `decode` take equal counts).
protocol WireFormat {
    associatedtype Word
    static func encode(_ values: UnsafeBufferPointer<Float>, into words: UnsafeMutableBufferPointer<Word>)
    static func decode(_ words: UnsafeBufferPointer<Word>, into values: UnsafeMutableBufferPointer<Float>)
}

enum FP32Wire: WireFormat {
    static func encode(_ values: UnsafeBufferPointer<Float>, into words: UnsafeMutableBufferPointer<Float>) {
        _ = words.update(fromContentsOf: values)
    }

    static func decode(_ words: UnsafeBufferPointer<Float>, into values: UnsafeMutableBufferPointer<Float>) {
        _ = values.update(fromContentsOf: words)
    }
}

/// The bf16 GEMMs' rounding (`BF16.pack`: nearest even, NaN stays NaN, fp32 denormals flush to zero).
enum BF16Wire: WireFormat {
    static func encode(_ values: UnsafeBufferPointer<Float>, into words: UnsafeMutableBufferPointer<UInt16>) {
        BF16.pack(values, into: words)
    }

    static func decode(_ words: UnsafeBufferPointer<UInt16>, into values: UnsafeMutableBufferPointer<Float>) {
        BF16.unpack(words, into: values)
    }
}

/// Collectives run one after another, each stage starting the next once the one before is complete (the stages do
/// their local work, then start their collective). With a `predecessor`, a stage starts only once the predecessor
/// has started the same stage, so that all chains start each stage in chain order.
final class StagedCollective: PendingCollective {
    private let stages: [() -> PendingCollective]
    private var current: PendingCollective
    /// Stages started so far.
    private(set) var started = 1
    private var predecessor: StagedCollective?

    init(_ stages: [() -> PendingCollective], after predecessor: StagedCollective?) {
        self.stages = stages
        self.predecessor = predecessor
        current = stages[0]()
    }

    /// Whether the next stage may start: the predecessor has started it. (A predecessor that has started all its
    /// stages is let go, so that chains do not keep each other alive.)
    private var mayAdvance: Bool {
        guard let predecessor else { return true }
        if predecessor.started == predecessor.stages.count { self.predecessor = nil }
        return predecessor.started > started
    }

    private func advance() {
        current = stages[started]()
        started += 1
    }

    /// Callers test earlier chains first (the synchronizer tests its buckets in order), so a stage held back by
    /// its predecessor goes ahead in the same round once the predecessor moves.
    func test() -> Bool {
        while current.test() {
            guard started < stages.count else { return true }
            guard mayAdvance else { return false }
            advance()
        }
        return false
    }

    func wait() {
        while true {
            current.wait()
            guard started < stages.count else { return }
            if !mayAdvance { predecessor!.wait() }
            advance()
        }
    }
}
