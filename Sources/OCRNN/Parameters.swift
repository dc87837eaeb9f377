import OCRTensor

/// How a parameter is filled before training when no checkpoint is loaded (docs/MODEL.md "Initialisation").
public enum Initializer {
    /// Kaiming normal, mode fan_out, gain √2 (ReLU): std = √(2 / (out_channels·kh·kw)).
    case kaimingNormalFanOut
    case constant(Float)
    case normal(std: Float)
}

/// A trainable tensor. `value` and `grad` are views into the store's flat buffers (bound by `finalize`), so the
/// optimizer is one loop and gradient buckets are contiguous slices.
public final class Parameter {
    public let name: String
    public let shape: [Int]
    public var initializer: Initializer
    public internal(set) var value: Tensor!
    public internal(set) var grad: Tensor!
    /// Offset of this parameter in the flat buffers.
    public internal(set) var offset = 0
    /// True from `zeroGrad` until a backward first writes the gradient: that write may then store instead of add.
    public internal(set) var gradientIsZero = true

    init(name: String, shape: [Int], initializer: Initializer) {
        self.name = name; self.shape = shape; self.initializer = initializer
    }
}

/// A float state tensor that is not trained (BN running statistics).
public final class Buffer {
    public let name: String
    public let value: Tensor
    init(name: String, value: Tensor) { self.name = name; self.value = value }
}

/// An int64 state scalar (BN `num_batches_tracked`).
public final class Counter {
    public let name: String
    public var value: Int64 = 0
    init(name: String) { self.name = name }
}

/// One entry of the state dict, in registration (= PyTorch `state_dict()`) order.
public enum StateEntry {
    case parameter(Parameter)
    case buffer(Buffer)
    case counter(Counter)

    public var name: String {
        switch self {
        case .parameter(let p): p.name
        case .buffer(let b): b.name
        case .counter(let c): c.name
        }
    }
}

/// Scratch memory shared by the layers of one model (im2col columns and the like). Layers run one at a time, so one
/// growing buffer serves them all; its contents are undefined between uses.
public final class Workspace {
    private var storage: UnsafeMutablePointer<Float>
    private var capacity: Int

    public init() {
        capacity = 0
        storage = FloatStorage.allocate(capacity: 1)
    }

    deinit { FloatStorage.deallocate(storage) }

    /// Gives the storage back (after an evaluation of larger images than training uses); the next `buffer` call
    /// allocates what it needs.
    public func release() {
        FloatStorage.deallocate(storage)
        storage = FloatStorage.allocate(capacity: 1)
        capacity = 0
    }

    /// At least `count` floats; valid until the next call.
    public func buffer(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > capacity {
            FloatStorage.deallocate(storage)
            storage = FloatStorage.allocate(capacity: count)
            capacity = count
        }
        return storage
    }
}

/// Through this seam BatchNorm combines its batch statistics and backward sums with the other replicas'. The NN
/// layers own the protocol; the distributed module implements it over MPI; `LocalReplica` is the one-process case.
public protocol ReplicaReducer: AnyObject {
    /// Merges this replica's per-channel (count, mean, M2 = Σ(x−mean)²) with every replica's, in place, so every
    /// replica ends with identical global statistics.
    func mergeBatchStatistics(count: inout Double, mean: UnsafeMutableBufferPointer<Double>,
                              m2: UnsafeMutableBufferPointer<Double>, layer: String)
    /// Sums `values` over all replicas, in place. `layer` names the BN layer (its mmseg key prefix) for messages.
    func sumAcrossReplicas(_ values: UnsafeMutableBufferPointer<Double>, layer: String)
}

/// Chan's parallel update of one channel's (count, mean, M2 = Σ(x−mean)²) in double: merges a part of `count`
/// values into an accumulation of `total` values. A part merged into nothing is taken as it is, so merging one image's planes one by one
/// in a process and merging ranks of one image each give the same bits. Returns the new total.
@inline(__always)
public func mergeStatistics(total: Double, mean: inout Double, m2: inout Double,
                            count: Double, partMean: Double, partM2: Double) -> Double {
    if total == 0 {
        (mean, m2) = (partMean, partM2)
        return count
    }
    let merged = total + count
    let delta = partMean - mean
    mean += delta * count / merged
    m2 += partM2 + delta * delta * total * count / merged
    return merged
}

/// The single-process reducer: statistics are already global.
public final class LocalReplica: ReplicaReducer {
    public init() {}
    public func mergeBatchStatistics(count: inout Double, mean: UnsafeMutableBufferPointer<Double>,
                                     m2: UnsafeMutableBufferPointer<Double>, layer: String) {}
    public func sumAcrossReplicas(_ values: UnsafeMutableBufferPointer<Double>, layer: String) {}
}

/// Everything the layers of one model share: the registry of parameters and state, the training flag, the GEMM
/// precision, the workspace, and the replica reducer for batch norm.
public final class ParameterStore {
    public private(set) var entries: [StateEntry] = []
    public private(set) var parameters: [Parameter] = []
    public private(set) var values: Tensor!
    public private(set) var grads: Tensor!
    public var training = true
    /// Operand precision of the layers' GEMMs (convolutions, the OCR head's matrix products) in training passes;
    /// everything else, the stored activations and parameters included, stays fp32.
    public var trainingPrecision = Precision.float32
    /// The precision the layers use now: evaluation (`training` false) runs fp32, as mmengine's ValLoop runs
    /// outside the AmpOptimWrapper's autocast.
    public var precision: Precision { training ? trainingPrecision : .float32 }
    /// Whether layers keep activations as bf16 bits once the forward is done with their fp32 values (batch-norm
    /// inputs, and what backward reads only through a GEMM or a ReLU mask; `BF16Activation`): in bf16 training
    /// only, where the backward's error stays that of PyTorch's autocast, which stores them in bf16 throughout
    /// (docs/TESTING.md).
    public var keepsActivationsInBF16: Bool { bf16ActivationsAllowed && training && trainingPrecision == .bfloat16 }
    /// Off: bf16 training keeps every activation in fp32, the step that keeping is compared with (tests).
    public var bf16ActivationsAllowed = true
    public var reducer: ReplicaReducer = LocalReplica()
    public let workspace = Workspace()
    /// Called by a layer's backward once it has finished accumulating a parameter's gradient for this pass; the
    /// data-parallel layer uses it to start reducing a bucket while backward continues.
    public var gradientReady: ((Parameter) -> Void)?

    public init() {}

    public var root: Scope { Scope(store: self, prefix: "") }

    func register(_ entry: StateEntry) {
        precondition(values == nil, "\(entry.name) registered after the store was finalized")
        precondition(!entries.contains { $0.name == entry.name }, "duplicate state key \(entry.name)")
        entries.append(entry)
        if case .parameter(let p) = entry { parameters.append(p) }
    }

    /// Allocates the flat value and gradient buffers and binds every parameter to its view. Parameters are laid out
    /// in reverse registration order: backward visits layers roughly last-to-first, so gradient buckets taken from
    /// the front of the buffer fill first.
    public func finalize() {
        precondition(values == nil, "finalize called twice")
        let total = parameters.reduce(0) { $0 + $1.shape.reduce(1, *) }
        values = Tensor(zeros: [total])
        grads = Tensor(zeros: [total])
        var offset = 0
        for p in parameters.reversed() {
            p.offset = offset
            p.value = Tensor(viewOf: values, offset: offset, shape: p.shape)
            p.grad = Tensor(viewOf: grads, offset: offset, shape: p.shape)
            offset += p.value.count
        }
    }

    public var parameterCount: Int { values?.count ?? 0 }

    /// Moves parameters so the flat buffers hold them in `order` (every parameter exactly once), keeping their
    /// values. Used to lay gradients out in the order backward produces them, so buckets complete front to back.
    public func relayout(order: [Parameter]) {
        precondition(values != nil, "relayout before finalize")
        precondition(order.count == parameters.count && Set(order.map(\.name)) == Set(parameters.map(\.name)),
                     "relayout order must list every parameter once")
        let newValues = Tensor(zeros: values.shape)
        var offset = 0
        for p in order {
            (newValues.data + offset).update(from: p.value.data, count: p.value.count)
            offset += p.value.count
        }
        values.copy(from: newValues)
        zeroGrad()
        offset = 0
        for p in order {
            p.offset = offset
            p.value = Tensor(viewOf: values, offset: offset, shape: p.shape)
            p.grad = Tensor(viewOf: grads, offset: offset, shape: p.shape)
            offset += p.value.count
        }
    }

    /// Parameters in flat-buffer order.
    public var parametersByOffset: [Parameter] { parameters.sorted { $0.offset < $1.offset } }

    public func zeroGrad() {
        grads.zero()
        for p in parameters { p.gradientIsZero = true }
    }

    /// Fills every parameter from its initializer, each from its own stream of `seed` so adding a layer does not
    /// change the others' values; resets running statistics and counters.
    public func initialize(seed: UInt64) {
        for (index, entry) in entries.enumerated() {
            switch entry {
            case .parameter(let p):
                var rng = SplitMix64(seed: seed, UInt64(index))
                switch p.initializer {
                case .constant(let c): p.value.fill(c)
                case .normal(let std):
                    for i in 0..<p.value.count { p.value[i] = Float(rng.normal()) * std }
                case .kaimingNormalFanOut:
                    let fanOut = p.shape[0] * p.shape.dropFirst(2).reduce(1, *)
                    let std = (2.0 / Double(fanOut)).squareRoot()
                    for i in 0..<p.value.count { p.value[i] = Float(rng.normal() * std) }
                }
            case .buffer(let b):
                b.value.fill(b.name.hasSuffix("running_var") ? 1 : 0)
            case .counter(let c):
                c.value = 0
            }
        }
    }
}

/// A naming context: `scope.child("layer1").child("0")` registers keys `layer1.0.*`, so the module tree spells the
/// mmseg state-dict keys.
public struct Scope {
    public let store: ParameterStore
    public let prefix: String

    public func child(_ name: String) -> Scope {
        Scope(store: store, prefix: prefix.isEmpty ? name : "\(prefix).\(name)")
    }

    func key(_ name: String) -> String { prefix.isEmpty ? name : "\(prefix).\(name)" }

    public func parameter(_ name: String, shape: [Int], initializer: Initializer) -> Parameter {
        let p = Parameter(name: key(name), shape: shape, initializer: initializer)
        store.register(.parameter(p))
        return p
    }

    public func buffer(_ name: String, shape: [Int]) -> Buffer {
        let b = Buffer(name: key(name), value: Tensor(zeros: shape))
        store.register(.buffer(b))
        return b
    }

    public func counter(_ name: String) -> Counter {
        let c = Counter(name: key(name))
        store.register(.counter(c))
        return c
    }
}
