import Foundation
import OCRNN
import OCRTensor

/// DDP's gradient averaging with communication overlapped with backward.
///
/// The flat gradient buffer is cut into contiguous buckets (first `firstBucketBytes`, then `bucketBytes`, at
/// parameter boundaries). The model lays parameters out in the order backward finishes them, so buckets complete
/// front to back; as each completes it is handed, in bucket order (identical on every rank), to a communication
/// thread that runs a blocking MPI_Allreduce on its own duplicated communicator and scales by 1/(ranks·micro-batches)
/// — Open MPI 4.1 does not progress nonblocking collectives in the background, so a thread is what overlaps.
/// How a bucket is summed (fp32 or bf16 payload, flat or hierarchical) is `BucketAllreduce`'s.
/// `finish()` waits for the last bucket; the time spent waiting there is the communication backward did not hide.
/// The `.polling` mode (the default) starts the bucket's nonblocking collectives on the compute thread and progresses
/// them with MPI_Test each time a layer finishes a gradient. Measured at 2 ranks × 1 thread on 2 cores (README),
/// polling hides as much and is 2–4 % faster per step: Open MPI's blocking allreduce busy-waits, so the thread takes
/// CPU from backward.
public final class GradientSynchronizer {
    public enum Overlap: String, CaseIterable, Sendable {
        case thread, polling
    }

    public struct Bucket {
        public let range: Range<Int>
        public let parameterCount: Int
    }

    public let buckets: [Bucket]
    public let communication: GradientCommunication
    public var overlap: Overlap { communication.overlap }
    /// Why the requested topology is not used, for the start-up log; nil when it is.
    public var topologyNote: String? { reducer.fallbackNote }
    /// The topology in use (flat when the requested one fell back).
    public var topology: GradientCommunication.Topology { reducer.topology }
    let store: ParameterStore
    private let reducer: BucketAllreduce
    let worldSize: Int
    /// Which bucket each parameter's gradient belongs to, by parameter offset.
    private var bucketOfOffset: [Int: Int] = [:]
    private var pending: [Int]
    private var nextToLaunch = 0
    private var scale: Float = 1

    private let condition = NSCondition()
    private var queue: [Int] = []
    private var completed = 0
    private var stopping = false
    private var thread: Thread?
    /// Signalled by the communication thread after its last use of self.
    private let threadExited = DispatchSemaphore(value: 0)
    private var inFlight: [PendingCollective] = []

    /// Seconds of the last step: all-reduce work on the communication thread, and compute-thread waiting in finish.
    public private(set) var allreduceSeconds = 0.0
    public private(set) var exposedSeconds = 0.0

    public init(store: ParameterStore, comm: Communicator, communication: GradientCommunication = .init()) {
        self.store = store
        self.communication = communication
        self.worldSize = comm.size
        // A communicator of its own: the buckets' collectives never interleave with sync BN's.
        reducer = BucketAllreduce(comm: comm.duplicate(), communication: communication)
        var buckets: [Bucket] = []
        var start = 0, count = 0, params = 0
        var limit = max(communication.firstBucketBytes / 4, 1)
        for p in store.parametersByOffset {
            if count > 0 && count + p.value.count > limit {
                buckets.append(Bucket(range: start..<(start + count), parameterCount: params))
                start += count; count = 0; params = 0
                limit = max(communication.bucketBytes / 4, 1)
            }
            bucketOfOffset[p.offset] = buckets.count
            count += p.value.count
            params += 1
        }
        if count > 0 { buckets.append(Bucket(range: start..<(start + count), parameterCount: params)) }
        self.buckets = buckets
        pending = buckets.map(\.parameterCount)
        if worldSize > 1 && overlap == .thread {
            // unowned(unsafe): deinit waits for `exited` before the memory goes, and the loop's last use of self
            // comes before that signal (a checked unowned reference would trap once deinit has begun).
            let exited = threadExited
            let t = Thread { [unowned(unsafe) self] in
                self.communicationLoop()
                exited.signal()
            }
            t.name = "ocr-ddp gradient allreduce"
            thread = t
            t.start()
        }
    }

    deinit {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
        if thread != nil { threadExited.wait() }
    }

    /// One phrase for the start-up line: "gradients fp32, flat all-reduce polled between layers, 12 buckets".
    public var describe: String {
        let overlapText = overlap == .polling ? "polled between layers" : "on a communication thread"
        return "gradients \(communication.payload.rawValue), \(topology.rawValue) all-reduce \(overlapText), "
            + (buckets.count == 1 ? "1 bucket" : "\(buckets.count) buckets")
    }

    /// Arms the hooks for a backward whose gradients are to be averaged now; `microBatches` backward passes have
    /// accumulated into the buffer (DDP `no_sync` for all but the last), so the average divides by ranks·micro-batches.
    public func beginSynchronizedBackward(microBatches: Int = 1) {
        pending = buckets.map(\.parameterCount)
        nextToLaunch = 0
        completed = 0
        scale = 1 / Float(worldSize * microBatches)
        allreduceSeconds = 0
        exposedSeconds = 0
        inFlight = []
        store.gradientReady = { [unowned self] p in self.parameterReady(p) }
    }

    private func parameterReady(_ p: Parameter) {
        guard let b = bucketOfOffset[p.offset] else { return }
        pending[b] -= 1
        while nextToLaunch < buckets.count && pending[nextToLaunch] == 0 {
            launch(nextToLaunch)
            nextToLaunch += 1
        }
        if !inFlight.isEmpty {
            let start = DispatchTime.now().uptimeNanoseconds
            for request in inFlight { _ = request.test() }
            allreduceSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
    }

    private func slice(_ index: Int) -> UnsafeMutableBufferPointer<Float> {
        let range = buckets[index].range
        return UnsafeMutableBufferPointer(start: store.grads.data + range.lowerBound, count: range.count)
    }

    private func launch(_ index: Int) {
        if worldSize > 1 && overlap == .polling {
            inFlight.append(reducer.start(slice(index), bucket: index, phase: bucketName(index)))
            return
        }
        if thread == nil {
            reduce(index)      // one rank: only the 1/micro-batches scaling
            completed += 1
            return
        }
        condition.lock()
        queue.append(index)
        condition.signal()
        condition.unlock()
    }

    private func reduce(_ index: Int) {
        if worldSize > 1 { reducer.reduce(slice(index), bucket: index, phase: bucketName(index)) }
        applyScale(index)
    }

    private func bucketName(_ index: Int) -> String { "gradient bucket \(index + 1)/\(buckets.count)" }

    private func applyScale(_ index: Int) {
        guard scale != 1 else { return }
        let values = slice(index)
        for i in 0..<values.count { values[i] *= scale }
    }

    private func communicationLoop() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopping { condition.wait() }
            if stopping && queue.isEmpty {
                condition.unlock()
                return
            }
            let index = queue.removeFirst()
            condition.unlock()
            let start = DispatchTime.now().uptimeNanoseconds
            reduce(index)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            condition.lock()
            allreduceSeconds += seconds
            completed += 1
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Waits until every bucket is averaged on this rank and disarms the hooks.
    public func finish() {
        store.gradientReady = nil
        // fatalError, not precondition: the check must survive -Ounchecked (the thread mode would wait forever, the
        // polling mode skip a bucket).
        if nextToLaunch != buckets.count {
            fatalError("backward did not report every gradient (bucket \(nextToLaunch + 1) of \(buckets.count) incomplete)")
        }
        let start = DispatchTime.now().uptimeNanoseconds
        if !inFlight.isEmpty {
            for (index, request) in inFlight.enumerated() {
                request.wait()
                applyScale(index)
            }
            inFlight = []
            completed = buckets.count
        }
        condition.lock()
        while completed < buckets.count { condition.wait() }
        condition.unlock()
        exposedSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}
