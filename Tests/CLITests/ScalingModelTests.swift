import Foundation
import OCRTestSupport
import XCTest

/// Tools/scaling_model.py on the committed measurements (docs/measurements): it fits, reports its error on the
/// simulated runs within what the README states, and predicts every node count, core count and link rate asked for.
final class ScalingModelTests: XCTestCase {
    func testModelFitsTheCommittedMeasurements() throws {
        let numpy = try runProcess("/usr/bin/env", ["python3", "-c", "import numpy"])
        try XCTSkipIf(numpy.status != 0, "numpy is not installed")
        let result = try runProcess("/usr/bin/env", ["python3", "Tools/scaling_model.py",
                                                     "docs/measurements/scaling-2026-12-01.jsonl"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let error = try XCTUnwrap(result.stdout.range(of: #"Step-time error: median (\d+) %, largest (\d+) %"#,
                                                      options: .regularExpression).map { String(result.stdout[$0]) })
        let numbers = error.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        print(error)
        XCTAssertLessThanOrEqual(numbers.first ?? 100, 15, error)
        XCTAssertLessThanOrEqual(numbers.last ?? 100, 25, error)
        for cores in ["32", "64"] {
            for rate in ["1gbit", "10gbit", "25gbit", "100gbit"] {
                XCTAssertTrue(result.stdout.contains("| \(cores) | \(rate) | "), "no prediction row for \(cores) cores at \(rate)")
            }
        }
        XCTAssertTrue(result.stdout.contains("1024 nodes"), result.stdout)
    }
}
