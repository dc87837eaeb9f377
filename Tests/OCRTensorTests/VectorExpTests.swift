import Foundation
import OCRTensor
import XCTest

/// The 16-lane exponential against the double one, rounded to fp32: within 2 ulp over every range the trainer can
/// meet (cross-entropy takes e^(x − max) ≤ 1), through the denormals to 0 and to +inf, NaN kept.
final class VectorExpTests: XCTestCase {
    /// Distance in representable fp32 values (ulps; denormals count in units of the smallest one), for finite
    /// values of the same sign or zero.
    private func ulps(_ a: Float, _ b: Float) -> Int {
        if a == b { return 0 }
        return abs(Int(Int32(bitPattern: a.bitPattern)) - Int(Int32(bitPattern: b.bitPattern)))
    }

    func testWithinTwoUlpOfTheDoubleExponential() {
        var worst = (ulps: 0, x: Float(0))
        var x: Float = -103.9
        while x < 88.7 {
            let lanes = VectorExp.Lanes((0..<16).map { x + Float($0) * 0.0001 })
            let got = VectorExp.exp(lanes)
            for l in 0..<16 {
                let want = Float(Foundation.exp(Double(lanes[l])))
                let error = ulps(got[l], want)
                if error > worst.ulps { worst = (error, lanes[l]) }
            }
            x += 0.0137
        }
        print("VectorExp: largest error \(worst.ulps) ulp at x = \(worst.x)")
        XCTAssertLessThanOrEqual(worst.ulps, 2, "at x = \(worst.x)")
    }

    func testLimitsAndSpecialValues() {
        XCTAssertEqual(VectorExp.exp(Float(0)), 1)
        XCTAssertEqual(VectorExp.exp(-Float.infinity), 0)
        XCTAssertEqual(VectorExp.exp(-200), 0)
        XCTAssertEqual(VectorExp.exp(Float.infinity), .infinity)
        XCTAssertEqual(VectorExp.exp(89), .infinity)
        XCTAssertTrue(VectorExp.exp(Float.nan).isNaN)
        XCTAssertEqual(VectorExp.exp(Float(1)), Float(M_E), accuracy: Float(M_E).ulp)
        // The tail of a run and its lanes agree bit for bit.
        let lanes = VectorExp.exp(VectorExp.Lanes((0..<16).map { Float($0) * -3.7 }))
        for l in 0..<16 { XCTAssertEqual(lanes[l].bitPattern, VectorExp.exp(Float(l) * -3.7).bitPattern) }
    }
}
