import OCRNN
import OCRTensor

/// mmseg `FCNHead` (decode_head.0), the soft object regions: k×k ConvModule (3×3 on ResNet's c3, 1×1 on HRNet's
/// concatenated branches) → Dropout2d → 1×1 conv_seg. x: N×C×h×w → (aux logits, region logits), each N×K×h×w.
///
/// mmseg's cascade runs this head twice per training step, once for the aux loss and once for the regions the OCR
/// head reads. Both passes see the same input and weights, so they differ only in their dropout masks, and the BN
/// running statistics move twice. With `passes` 2 the ConvModule runs once, its BN update is repeated, and the two
/// dropout masks go through conv_seg as one batch of 2N; with dropout inactive both outputs are one tensor.
final class FCNHead {
    let convSeg: Conv2d
    let conv: ConvBN
    let dropout: Dropout2d
    let passes: Int
    private let store: ParameterStore
    /// Whether the last forward ran conv_seg on the 2N batch of two dropout masks.
    private var twoMasks = false

    init(_ scope: Scope, inChannels: Int, config: ModelConfig, seed: UInt64) {
        store = scope.store
        passes = config.fcnPasses
        // Registration follows mmseg's state_dict order: the base decode head creates conv_seg first.
        convSeg = Conv2d(scope.child("conv_seg"), in: config.fcnChannels, out: config.numClasses, kernel: 1,
                         bias: true, weightInit: .normal(std: 0.01))
        conv = ConvBN(module: scope.child("convs.0"), in: inChannels, out: config.fcnChannels,
                      kernel: config.fcnKernelSize)
        dropout = Dropout2d(scope, probability: config.fcnDropout, seed: seed)
    }

    /// Sample keys of the second pass: the first pass's with the top bit set (stream positions stay below 2⁶³).
    static func secondPassKeys(_ keys: [UInt64]) -> [UInt64] { keys.map { $0 | (1 << 63) } }

    func forward(_ c3: Tensor, sampleKeys: [UInt64]) -> (aux: Tensor, regions: Tensor) {
        let y = conv.forward(c3)
        let secondPass = store.training && passes == 2
        if secondPass { conv.bn.repeatRunningStatisticsUpdate() }
        twoMasks = secondPass && dropout.probability > 0
        let keepsBF16 = store.keepsActivationsInBF16
        guard twoMasks else {
            let dropped = dropout.forward(y, sampleKeys: sampleKeys)
            let logits = convSeg.forward(dropped)
            if keepsBF16 { keepClassifierInput(y, from: conv, dropped: dropped, into: convSeg) }
            return (logits, logits)
        }
        let n = y.shape[0]
        let pair = Tensor.transient(shape: [2 * n] + y.shape.dropFirst())
        pair.data.update(from: y.data, count: y.count)
        (pair.data + y.count).update(from: y.data, count: y.count)
        let dropped = dropout.forward(pair, sampleKeys: sampleKeys + Self.secondPassKeys(sampleKeys))
        let logits = convSeg.forward(dropped)
        if keepsBF16 { keepClassifierInput(y, from: conv, dropped: dropped, into: convSeg) }
        let half = [n] + logits.shape.dropFirst()
        return (Tensor(viewOf: logits, offset: 0, shape: half), Tensor(viewOf: logits, offset: logits.count / 2, shape: half))
    }

    /// (d aux logits, d region logits) → dx; the two may be one tensor when forward returned one.
    func backward(aux dAux: Tensor, regions dRegions: Tensor) -> Tensor {
        guard twoMasks else {
            if dAux !== dRegions { addInPlace(dAux, dRegions) }
            return conv.backward(dropout.backward(convSeg.backward(dAux)!))!
        }
        let pair = Tensor.transient(shape: [2 * dAux.shape[0]] + dAux.shape.dropFirst())
        pair.data.update(from: dAux.data, count: dAux.count)
        (pair.data + dAux.count).update(from: dRegions.data, count: dRegions.count)
        let dPair = dropout.backward(convSeg.backward(pair)!)
        let half = dPair.count / 2
        let dy = Tensor(viewOf: dPair, offset: 0, shape: [dAux.shape[0]] + dPair.shape.dropFirst())
        addInPlace(dy, Tensor(viewOf: dPair, offset: half, shape: dy.shape))
        return conv.backward(dy)!
    }
}

/// mmseg `OCRHead` (decode_head.1) with its ObjectAttentionBlock, the object-contextual representation:
///   X = bottleneck(c4)                                   N×C×h×w     (3×3 ConvModule)
///   P = softmax over h·w of the soft regions L           N×K×hw
///   F_b = X_b·P_bᵀ                                       N×C×K×1     (spatial gather: one vector per class)
///   Q = query_project(X), Kt = key_project(F), V = value_project(F)   N×M×hw, N×M×K, N×M×K
///   A = softmax over K of Qᵀ·Kt·M^-½                      N×hw×K
///   ctx = out_project(V·Aᵀ)                              N×C×h×w
///   Y = object_context_block.bottleneck(concat[ctx, X])  N×C×h×w     (context first)
///   logits = conv_seg(Dropout2d(Y))                      N×K×h×w
final class OCRHead {
    let convSeg: Conv2d
    let keyProject: [ConvBN]
    let queryProject: [ConvBN]
    let valueProject: ConvBN
    let outProject: ConvBN
    let fuse: ConvBN
    let bottleneck: ConvBN
    let dropout: Dropout2d

    let regionSoftmax = Softmax(axis: 1)
    let gather = BatchedMatMul(transB: true)
    let similarity: BatchedMatMul
    let attentionSoftmax = Softmax(axis: 2)
    let attend = BatchedMatMul(transB: true)
    let concat = ChannelConcat()
    private let store: ParameterStore

    init(_ scope: Scope, inChannels: Int, config: ModelConfig, seed: UInt64) {
        store = scope.store
        let (c, m) = (config.ocrChannels, config.ocrMidChannels)
        convSeg = Conv2d(scope.child("conv_seg"), in: c, out: config.numClasses, kernel: 1, bias: true,
                         weightInit: .normal(std: 0.01))
        let block = scope.child("object_context_block")
        keyProject = [ConvBN(module: block.child("key_project.0"), in: c, out: m, kernel: 1),
                      ConvBN(module: block.child("key_project.1"), in: m, out: m, kernel: 1)]
        queryProject = [ConvBN(module: block.child("query_project.0"), in: c, out: m, kernel: 1),
                        ConvBN(module: block.child("query_project.1"), in: m, out: m, kernel: 1)]
        valueProject = ConvBN(module: block.child("value_project"), in: c, out: m, kernel: 1)
        outProject = ConvBN(module: block.child("out_project"), in: m, out: c, kernel: 1)
        fuse = ConvBN(module: block.child("bottleneck"), in: 2 * c, out: c, kernel: 1)
        bottleneck = ConvBN(module: scope.child("bottleneck"), in: inChannels, out: c, kernel: 3)
        dropout = Dropout2d(scope, probability: config.ocrDropout, seed: seed)
        similarity = BatchedMatMul(transA: true, alpha: 1 / Float(m).squareRoot())
    }

    // forward and backward are scoped so that each N×·×h×w tensor (64–256 MB in fp32 on HRNet at 512×1024) goes
    // once its last reader has run: a local lives to the end of its scope (measured on HRNet-W18 bf16: 636 MB of
    // the forward's and 585 MB of the backward's were held until they returned).
    func forward(_ c4: Tensor, regions: Tensor, sampleKeys: [UInt64]) -> Tensor {
        // In bf16 training every N×·×h×w activation is kept as bf16 bits once its last fp32 reader here has run;
        // the N×·×K ones of the object contexts are small and stay fp32.
        let keepsBF16 = store.keepsActivationsInBF16
        let y: Tensor
        do {
            let joined: Tensor
            do {
                let x = bottleneck.forward(c4)
                let context = objectContext(x, regions: regions)
                let projected = outProject.forward(context)
                joined = concat.forward([projected, x])
                if keepsBF16 {
                    outProject.conv.keepInput(BF16Activation(rounding: context))
                    outProject.bn.keepOutput(BF16Activation(rounding: projected))
                    let keptX = BF16Activation(rounding: x)
                    keep(keptX, from: bottleneck, for: [queryProject[0].conv])
                    gather.keepA(keptX)
                }
            }
            y = fuse.forward(joined)
            if keepsBF16 { fuse.conv.keepInput(BF16Activation(rounding: joined)) }
        }
        let dropped = dropout.forward(y, sampleKeys: sampleKeys)
        let logits = convSeg.forward(dropped)
        if keepsBF16 { keepClassifierInput(y, from: fuse, dropped: dropped, into: convSeg) }
        return logits
    }

    /// V·Aᵀ (N×M×h×w) for X = bottleneck(c4) and soft regions L: the gather, the projections and the attention.
    private func objectContext(_ x: Tensor, regions: Tensor) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let k = regions.shape[1]
        let m = keyProject[0].conv.outChannels
        precondition(regions.shape == [n, k, h, w], "soft regions \(regions.shape) do not match features \(x.shape)")
        let (precision, keepsBF16) = (store.precision, store.keepsActivationsInBF16)
        let p = regionSoftmax.forward(regions.reshaped([n * k, h * w]))
        let f = gather.forward(x, p, batch: n, m: c, n: k, k: h * w, outputShape: [n, c, k, 1],
                                precision: precision)
        let q = forwardChain(queryProject, x, keepingBF16: keepsBF16)
        var key = f
        for layer in keyProject { key = layer.forward(key) }
        let value = valueProject.forward(f)
        let s = similarity.forward(q, key, batch: n, m: h * w, n: k, k: m, outputShape: [n, h * w, k],
                                    precision: precision)
        if keepsBF16 {
            let keptQuery = BF16Activation(rounding: q)
            queryProject[queryProject.count - 1].bn.keepOutput(keptQuery)
            similarity.keepA(keptQuery)
        }
        let a = attentionSoftmax.forward(s)
        return attend.forward(value, a, batch: n, m: m, n: h * w, k: k, outputShape: [n, m, h, w], precision: precision)
    }

    /// dlogits → (dc4, dL): the OCR loss reaches the soft regions through the gather (they are not detached).
    func backward(_ dLogits: Tensor) -> (Tensor, Tensor) {
        let dx: Tensor, dValue: Tensor, dAttention: Tensor
        do {
            let parts = concat.backward(fuse.backward(dropout.backward(convSeg.backward(dLogits)!))!)
            dx = parts[1]
            (dValue, dAttention) = attend.backward(outProject.backward(parts[0])!)
        }
        let dF: Tensor
        do {
            let (dQuery, dKey) = similarity.backward(attentionSoftmax.backward(dAttention))
            addInPlace(dx, queryProject.reversed().reduce(dQuery) { g, layer in layer.backward(g)! })
            dF = keyProject.reversed().reduce(dKey) { g, layer in layer.backward(g)! }
        }
        addInPlace(dF, valueProject.backward(dValue)!)
        let dRegions: Tensor
        do {
            let (dxGather, dP) = gather.backward(dF)
            addInPlace(dx, dxGather)
            dRegions = regionSoftmax.backward(dP)
        }
        return (bottleneck.backward(dx)!, dRegions)
    }
}
