import Foundation
import OCRTensor
import XCTest

/// Tensor storage: blocks of 2 MB and more start on a huge page and carry the kernel's huge-page advice (the
/// mapping's "hg" flag in /proc/self/smaps); smaller ones are 64-byte aligned and go through the same free.
final class FloatStorageTests: XCTestCase {
    /// The VmFlags of the mapping of this process that holds `address`, from /proc/self/smaps.
    private func mappingFlags(of address: UInt) throws -> [String] {
        // Read to the end: /proc files report a size of 0, which a whole-file read may take at its word.
        guard let file = FileHandle(forReadingAtPath: "/proc/self/smaps") else { throw XCTSkip("no /proc/self/smaps") }
        defer { try? file.close() }
        let smaps = String(decoding: file.readDataToEndOfFile(), as: UTF8.self)
        var inside = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && bounds[0] <= address && address < bounds[1]
            } else if inside, fields.first == "VmFlags:" {
                return fields.dropFirst().map(String.init)
            }
        }
        throw XCTSkip("no mapping of \(String(address, radix: 16)) in /proc/self/smaps")
    }

    func testLargeBlocksAreHugePageAlignedAndAdvised() throws {
        #if os(Linux)
        let mode = (try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)) ?? ""
        if mode.isEmpty || mode.contains("[never]") { throw XCTSkip("transparent huge pages off here: \(mode)") }
        let floats = 3 << 20  // 12 MB
        let block = FloatStorage.allocate(capacity: floats)
        defer { FloatStorage.deallocate(block) }
        block.initialize(repeating: 1, count: floats)
        let address = UInt(bitPattern: block)
        XCTAssertEqual(address % UInt(2 << 20), 0, "a 12 MB block at \(String(address, radix: 16))")
        let flags = try mappingFlags(of: address)
        XCTAssertTrue(flags.contains("hg"), "12 MB block not advised MADV_HUGEPAGE; VmFlags \(flags)")
        XCTAssertEqual(block[floats - 1], 1)
        #else
        throw XCTSkip("huge-page advice is Linux only")
        #endif
    }

    func testSmallBlocksAreVectorAligned() {
        for floats in [1, 17, 1000, 100_000] {
            let block = FloatStorage.allocate(capacity: floats)
            XCTAssertEqual(UInt(bitPattern: block) % 64, 0, "\(floats) floats")
            block.initialize(repeating: 2, count: floats)
            XCTAssertEqual(block[floats - 1], 2)
            FloatStorage.deallocate(block)
        }
    }
}
