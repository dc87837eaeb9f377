import Foundation
import OCRTrain
import XCTest

/// What people read: mmengine-style log lines, progress, and TensorBoard's framing.
final class ConsoleTests: XCTestCase {
    func testDurationsReadAsPythonTimedelta() {
        XCTAssertEqual(ConsoleFormat.duration(0), "0:00:00")
        XCTAssertEqual(ConsoleFormat.duration(312.9), "0:05:12")
        XCTAssertEqual(ConsoleFormat.duration(86_400 + 3 * 3600 + 4 * 60 + 5), "1 day, 3:04:05")
        XCTAssertEqual(ConsoleFormat.duration(2 * 86_400), "2 days, 0:00:00")
        XCTAssertEqual(ConsoleFormat.duration(.nan), "0:00:00")
    }

    func testTrainLineRoundsSensibly() {
        let line = ConsoleFormat.trainLine(iteration: 20, maxIters: 1200, lr: 0.046105, eta: 312, time: 0.31234567,
                                           dataTime: 0.0039832, memoryMB: 147.816, losses: [("loss", 1.234567), ("loss_aux", 0.3)])
        XCTAssertEqual(line, "Iter(train) [  20/1200]  lr: 4.6105e-02  eta: 0:05:12  time: 0.3123  data_time: 0.0040  "
                       + "memory: 148  loss: 1.2346  loss_aux: 0.3000")
    }

    /// Off a terminal a plain line every 10 % (or 30 s) and at the end; on one, the line redrawn in place.
    func testProgressPrintsStepsOffATerminalAndRedrawsOnOne() {
        var plain: [String] = []
        let start = Date()
        let log = ProgressReporter("Iter(val)", total: 50, enabled: true, interactive: false, write: { plain.append($0) })
        for done in 1...50 { log.update(done: done, now: start.addingTimeInterval(Double(done) * 0.1)) }
        XCTAssertEqual(plain.count, 10, "\(plain)")
        XCTAssertTrue(plain.allSatisfy { $0.hasSuffix("\n") && !$0.contains("\r") })
        XCTAssertTrue(plain.last!.hasPrefix("Iter(val) [50/50]  100%"), plain.last!)
        XCTAssertTrue(plain[0].hasPrefix("Iter(val) [ 5/50]  10%"), plain[0])

        var slow: [String] = []
        let slowLog = ProgressReporter("predict", total: 1000, enabled: true, interactive: false, seconds: 30,
                                       write: { slow.append($0) })
        for done in 1...5 { slowLog.update(done: done, now: Date().addingTimeInterval(Double(done) * 31)) }
        XCTAssertEqual(slow.count, 5, "every 30 s even below 10 %")

        var redrawn: [String] = []
        let tty = ProgressReporter("Iter(val)", total: 3, enabled: true, interactive: true, write: { redrawn.append($0) })
        for done in 1...3 { tty.update(done: done) }
        XCTAssertEqual(redrawn.count, 3)
        XCTAssertTrue(redrawn.allSatisfy { $0.hasPrefix("\r") })
        XCTAssertTrue(redrawn.last!.hasSuffix("\n") && !redrawn[0].hasSuffix("\n"))

        var silent: [String] = []
        let off = ProgressReporter("Iter(val)", total: 3, enabled: false, interactive: false, write: { silent.append($0) })
        off.update(done: 3)
        XCTAssertEqual(silent, [], "ranks other than 0 print nothing")
    }

    /// CRC-32C's check value, TFRecord's mask, and one framed record laid out as TFRecord reads it.
    func testTensorBoardFraming() {
        XCTAssertEqual(TensorBoardWriter.crc32c(Array("123456789".utf8)), 0xE306_9283)
        let crc = TensorBoardWriter.crc32c([1, 2, 3])
        XCTAssertEqual(TensorBoardWriter.maskedCRC32C([1, 2, 3]), ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8)
        let framed = [UInt8](TensorBoardWriter.frame([7, 8, 9]))
        XCTAssertEqual(framed.count, 8 + 4 + 3 + 4)
        XCTAssertEqual(Array(framed[0..<8]), [3, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(Array(framed[12..<15]), [7, 8, 9])
        XCTAssertEqual(Array(framed[15..<19]), TensorBoardWriter.littleEndian(TensorBoardWriter.maskedCRC32C([7, 8, 9])))
    }
}
