/// e^x on 16 float lanes, for the loops that take an exponential per element (cross-entropy's softmax over 19
/// classes per pixel): libm's expf is one call per element and keeps such a loop scalar.
///
/// e^x = 2^n · e^r with n = round(x·log₂e) and r = x − n·ln2 (ln2 in two parts, the first exact in 9 bits, so
/// n·ln2_hi is exact), |r| ≤ ln2/2; e^r = 1 + r + r²·p(r) with Cephes's degree-5 polynomial for expf. 2^n is applied
/// as two powers of two, so results run smoothly into fp32 denormals and to infinity as expf's do. Against the
/// double exponential rounded to fp32, on a sweep from −103.9 (denormal results) to 88.7: at most 1 ulp (tested: 2).
public enum VectorExp {
    public typealias Lanes = SIMD16<Float>

    @inlinable
    public static func exp(_ x: Lanes) -> Lanes {
        // Past these e^x is 0 or +inf in fp32 whatever n is; clamping keeps n's powers of two in range, and a NaN
        // lane computes on 0 and is put back at the end.
        let isNaN = x .!= x
        let clamped = x.replacing(with: -104, where: x .< -104).replacing(with: 89, where: x .> 89)
            .replacing(with: 0, where: isNaN)
        // n = round(x·log₂e) by adding 1.5·2²³: the sum's low mantissa bits are n (no trapping float → int).
        let magic = Lanes(repeating: 12582912)
        let shifted = clamped * 1.44269504088896341 + magic
        let n = shifted - magic
        let whole = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
        let r = (clamped - n * 0.693359375) + n * 2.12194440e-4
        var p = Lanes(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let expR = p * (r * r) + r + 1
        let half = whole &>> 1
        let result = expR * powerOfTwo(half) * powerOfTwo(whole &- half)
        return result.replacing(with: x, where: isNaN)
    }

    /// e^x for one value, computed as the lanes are: the tail of a run gets the same arithmetic as its body.
    @inlinable
    public static func exp(_ x: Float) -> Float { exp(Lanes(repeating: x))[0] }

    /// 2^e for integer e in [−126, 127], from the exponent bits.
    @inlinable
    static func powerOfTwo(_ e: SIMD16<Int32>) -> Lanes {
        unsafeBitCast((e &+ 127) &<< 23, to: Lanes.self)
    }
}
