import Foundation

/// SplitMix64: a small, fast, seedable generator. Everything random in ocr-ddp (initialisation, dropout masks,
/// augmentation) derives from explicit seeds through it, so runs are reproducible and resumable.
public struct SplitMix64: RandomNumberGenerator {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A generator for a sub-stream identified by `keys` (e.g. seed, epoch, sample index).
    public init(seed: UInt64, _ keys: UInt64...) {
        var s = SplitMix64(seed: seed)
        var mixed = s.next()
        for k in keys {
            s = SplitMix64(seed: mixed ^ (k &* 0x9E37_79B9_7F4A_7C15))
            mixed = s.next()
        }
        state = mixed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func uniform() -> Double {
        Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Standard normal (Box–Muller).
    public mutating func normal() -> Double {
        var u1 = uniform()
        while u1 <= Double.leastNormalMagnitude { u1 = uniform() }
        let u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}


/// FNV-1a (64-bit) of a string's UTF-8 bytes: a stable fingerprint of layouts and configs, the same on every rank
/// and every run (Swift's `hashValue` is seeded per process).
public func fnv1a(_ text: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in text.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}
