import OCRNN
import OCRTensor

/// Where bf16 training keeps activations as bf16 bits (`BF16Activation`): once the forward has run every fp32
/// reader of an activation, its backward readers get the bits instead, and the fp32 tensor goes back to the pool.

/// Hands a ConvBN's BN + ReLU output, as bf16 bits, to that BN (for its mask) and to the convolutions it fed.
func keep(_ kept: BF16Activation, from producer: ConvBN, for readers: [Conv2d]) {
    producer.bn.keepOutput(kept)
    for conv in readers { conv.keepInput(kept) }
}

/// x through ConvBN pairs in turn. With `keepingBF16`, each pair's BN + ReLU output is kept as bf16 once the next
/// pair's convolution, its one fp32 reader, has run; the last pair's output is the caller's.
func forwardChain(_ pairs: [ConvBN], _ x: Tensor, keepingBF16 keeps: Bool) -> Tensor {
    var h = x
    for (i, pair) in pairs.enumerated() {
        let next = pair.forward(h)
        if keeps, i > 0 { keep(BF16Activation(rounding: h), from: pairs[i - 1], for: [pair.conv]) }
        h = next
    }
    return h
}

/// A head's classifier input, kept: y, the BN + ReLU output of `producer`, and `dropped`, what dropout made of it
/// (y itself when dropout is off), which `classifier` (conv_seg) read.
func keepClassifierInput(_ y: Tensor, from producer: ConvBN, dropped: Tensor, into classifier: Conv2d) {
    let kept = BF16Activation(rounding: y)
    producer.bn.keepOutput(kept)
    classifier.keepInput(dropped === y ? kept : BF16Activation(rounding: dropped))
}
