import OCRTensor

/// A bias-free convolution followed by batch norm and, optionally, ReLU: mmcv's ConvModule (keys `<name>.conv.*`,
/// `<name>.bn.*`) and the conv/bn pairs of the ResNet blocks (keys `conv1.*`, `bn1.*`), which differ only in names.
/// x: N×C×H×W → y: N×O×Ho×Wo.
public final class ConvBN {
    public let conv: Conv2d
    public let bn: BatchNorm2d

    public init(conv convScope: Scope, bn bnScope: Scope, in inChannels: Int, out outChannels: Int, kernel: Int,
                stride: Int = 1, padding: Int = 0, dilation: Int = 1, relu: Bool, bnWeightInit: Float = 1) {
        conv = Conv2d(convScope, in: inChannels, out: outChannels, kernel: kernel, stride: stride, padding: padding,
                      dilation: dilation)
        bn = BatchNorm2d(bnScope, channels: outChannels, relu: relu, weightInit: bnWeightInit)
    }

    /// mmcv ConvModule naming: `<scope>.conv`, `<scope>.bn`; padding keeps the size at stride 1.
    public convenience init(module scope: Scope, in inChannels: Int, out outChannels: Int, kernel: Int,
                            relu: Bool = true) {
        self.init(conv: scope.child("conv"), bn: scope.child("bn"), in: inChannels, out: outChannels, kernel: kernel,
                  padding: kernel / 2, relu: relu)
    }

    public func forward(_ x: Tensor) -> Tensor { bn.forward(conv.forward(x)) }

    @discardableResult
    public func backward(_ dy: Tensor) -> Tensor? { conv.backward(bn.backward(dy)) }
}
