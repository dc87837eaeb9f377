import Foundation

/// A dense float32 tensor in row-major (NCHW) order.
///
/// Storage is a raw buffer so hot loops take the pointer once and never go through `[Float]`. A tensor either owns
/// its buffer or is a view into another tensor's (the flat parameter and gradient buffers hand out named views);
/// a view keeps its owner alive.
public final class Tensor {
    public let shape: [Int]
    public let count: Int
    public let data: UnsafeMutablePointer<Float>
    private let owner: Tensor?
    /// Where the storage goes back when this tensor is released (`Tensor.transient`), with its real size.
    private let recycler: TensorPool?
    private let capacity: Int

    /// A new zero-filled tensor.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.data = FloatStorage.allocate(capacity: Swift.max(count, 1))
        self.data.initialize(repeating: 0, count: Swift.max(count, 1))
        self.owner = nil
        self.recycler = nil
        self.capacity = Swift.max(count, 1)
    }

    /// A tensor on storage from `pool`, returned there on release. Contents are left as they were: the caller
    /// writes every element.
    init(shape: [Int], count: Int, pool: TensorPool, storage: UnsafeMutablePointer<Float>, capacity: Int) {
        self.shape = shape
        self.count = count
        self.data = storage
        self.owner = nil
        self.recycler = pool
        self.capacity = capacity
    }

    public convenience init(shape: [Int], values: [Float]) {
        self.init(zeros: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    /// A view of `count(shape)` elements of `base` starting at `offset`.
    public init(viewOf base: Tensor, offset: Int, shape: [Int]) {
        let n = shape.reduce(1, *)
        precondition(offset >= 0 && offset + n <= base.count, "view \(offset)+\(n) outside \(base.count)")
        self.shape = shape
        self.count = n
        self.data = base.data + offset
        self.owner = base
        self.recycler = nil
        self.capacity = n
    }

    deinit {
        if let recycler {
            recycler.recycle(data, capacity: capacity)
        } else if owner == nil {
            FloatStorage.deallocate(data)
        }
    }

    /// The same storage under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(viewOf: self, offset: 0, shape: newShape)
    }

    public subscript(_ i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }

    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    public func fill(_ value: Float) { data.update(repeating: value, count: count) }
    public func zero() { fill(0) }

    public func copy(from other: Tensor) {
        precondition(other.count == count, "copy of \(other.shape) into \(shape)")
        data.update(from: other.data, count: count)
    }

    public func clone() -> Tensor {
        let t = Tensor(zeros: shape)
        t.copy(from: self)
        return t
    }

    /// Dimension `i` of a 4-D NCHW tensor, with a readable failure when the rank is wrong.
    public func dim(_ i: Int) -> Int {
        precondition(i < shape.count, "tensor of shape \(shape) has no dimension \(i)")
        return shape[i]
    }
}

extension Tensor {
    /// `cache` if it already has `shape`, else a new zeroed tensor stored into `cache`: layers keep their outputs and
    /// gradient buffers across steps so a steady-state step allocates nothing.
    public static func reuse(_ cache: inout Tensor?, shape: [Int]) -> Tensor {
        if let existing = cache, existing.shape == shape { return existing }
        let fresh = Tensor(zeros: shape)
        cache = fresh
        return fresh
    }
}

extension Tensor {
    /// A short-lived tensor (a gradient) whose storage is recycled through the shared pool when the last reference
    /// goes: memory follows the gradients alive at one time instead of one buffer per layer, and steady-state steps
    /// map no new pages. Contents are undefined; the caller writes every element. Layers let go of what they saved
    /// for backward when their backward has run, so that it serves the rest of the backward rather than waiting for
    /// the next forward to replace it (HRNet-W18 in bf16 at 512×1024 held 2.2 GB so from one step to the next).
    public static func transient(shape: [Int]) -> Tensor {
        TensorPool.shared.tensor(shape: shape)
    }
}

/// Free storage of released transient tensors, reused best-fit. Thread-safe (a tensor may be released on any thread).
public final class TensorPool: @unchecked Sendable {
    public static let shared = TensorPool()
    private var free: [(storage: UnsafeMutablePointer<Float>, capacity: Int)] = []
    private let lock = NSLock()

    public init() {}

    /// Floats held in free storage now (for tests and memory reports).
    public var freeFloats: Int { lock.withLock { free.reduce(0) { $0 + $1.capacity } } }

    public func tensor(shape: [Int]) -> Tensor {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        let count = shape.reduce(1, *)
        let needed = Swift.max(count, 1)
        let reused: (storage: UnsafeMutablePointer<Float>, capacity: Int)? = lock.withLock {
            // Smallest free block that fits, and not more than 1.5× the need: a small gradient must not pin a
            // large block that a large gradient will want next, nor a bf16 activation (half its fp32 tensor) the
            // block of the fp32 tensor it was rounded from (at 2×, HRNet-W18's first bf16 step did so throughout
            // and the pool held 3214 MB where 2783 serve every step; peak RSS 4045 → 3615 MiB).
            var best: Int?
            for (i, block) in free.enumerated() where block.capacity >= needed && 2 * block.capacity <= 3 * needed {
                if best == nil || block.capacity < free[best!].capacity { best = i }
            }
            return best.map { free.remove(at: $0) }
        }
        let block = reused ?? (FloatStorage.allocate(capacity: needed), needed)
        return Tensor(shape: shape, count: count, pool: self, storage: block.storage, capacity: block.capacity)
    }

    /// Frees the storage no tensor holds now. Training steps reach a steady set of blocks, but an evaluation of
    /// whole images (4× a Cityscapes crop) leaves larger ones that no training request would ever reuse: the
    /// trainer calls this after evaluating, so RSS returns to the training level.
    public func releaseFree() {
        let released = lock.withLock { () -> [UnsafeMutablePointer<Float>] in
            defer { free.removeAll() }
            return free.map(\.storage)
        }
        for storage in released { FloatStorage.deallocate(storage) }
    }

    func recycle(_ storage: UnsafeMutablePointer<Float>, capacity: Int) {
        lock.withLock { free.append((storage, capacity)) }
    }
}

/// Integer class labels N×H×W (255 = ignore), kept apart from float tensors so they can never be mixed up.
public struct LabelMap {
    public var shape: [Int]
    public var values: [Int32]
    public init(shape: [Int], values: [Int32]) {
        precondition(shape.reduce(1, *) == values.count, "\(values.count) labels for shape \(shape)")
        self.shape = shape
        self.values = values
    }
}
