import Foundation
import OCRData

/// Training curves from WORK_DIR/log.jsonl as a PNG (`ocr-ddp plot`, and WORK_DIR/curves.png after every
/// evaluation): loss (total, aux, ocr), learning rate and val mIoU against iteration, three panels over one
/// iteration axis, each with ticks, grid, title and legend, drawn with a built-in 5×7 bitmap font.
public enum TrainingCurves {
    public struct Series {
        public let name: String
        public let points: [(x: Double, y: Double)]
    }

    /// The log's series: ("loss", "loss_aux", "loss_ocr"), ("lr"), ("mIoU"), each (iter, value).
    public static func series(logFile: String) throws -> (losses: [Series], lr: Series, mIoU: Series) {
        guard let text = try? String(contentsOfFile: logFile, encoding: .utf8) else {
            throw LogError("\(logFile): cannot read the training log")
        }
        var values: [String: [(x: Double, y: Double)]] = [:]
        for (number, line) in text.split(separator: "\n").enumerated() {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let iteration = (object["iter"] as? NSNumber)?.doubleValue else {
                throw LogError("\(logFile): line \(number + 1) is not a log record")
            }
            for key in ["loss", "loss_aux", "loss_ocr", "lr", "mIoU"] {
                if let value = (object[key] as? NSNumber)?.doubleValue, value.isFinite {
                    values[key, default: []].append((iteration, value))
                }
            }
        }
        guard values["loss"] != nil else { throw LogError("\(logFile): no training records to plot") }
        return (["loss", "loss_aux", "loss_ocr"].map { Series(name: $0, points: values[$0] ?? []) },
                Series(name: "lr", points: values["lr"] ?? []), Series(name: "mIoU", points: values["mIoU"] ?? []))
    }

    /// Renders the curves of `logFile` into `out` (PNG, 1200×900).
    public static func write(logFile: String, to out: String) throws {
        let (losses, lr, mIoU) = try series(logFile: logFile)
        var canvas = Canvas(width: 1200, height: 900)
        let lastIteration = (losses + [lr, mIoU]).flatMap { $0.points.map(\.x) }.max() ?? 1
        let panels: [(String, [Series])] = [("loss", losses), ("learning rate", [lr]), ("val mIoU (%)", [mIoU])]
        for (index, panel) in panels.enumerated() {
            let top = 20 + index * 290
            canvas.panel(title: panel.0, series: panel.1, frame: (x: 120, y: top + 40, width: 1040, height: 200),
                         xRange: (0, max(lastIteration, 1)), xLabel: index == panels.count - 1 ? "iteration" : nil)
        }
        try ImageCodec.writeRGB(PixelImage(width: canvas.width, height: canvas.height, channels: 3, pixels: canvas.pixels),
                                to: out)
    }
}

/// An RGB raster with the few drawing operations the curves need.
struct Canvas {
    typealias Color = (UInt8, UInt8, UInt8)
    static let palette: [Color] = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]   // matplotlib's first three
    static let black: Color = (0, 0, 0), grid: Color = (225, 225, 225), gray: Color = (90, 90, 90)

    let width: Int, height: Int
    var pixels: [UInt8]

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 255, count: width * height * 3)
    }

    mutating func set(_ x: Int, _ y: Int, _ color: Color) {
        guard (0..<width).contains(x), (0..<height).contains(y) else { return }
        let i = (y * width + x) * 3
        (pixels[i], pixels[i + 1], pixels[i + 2]) = color
    }

    mutating func fill(x: Int, y: Int, width w: Int, height h: Int, _ color: Color) {
        for yy in y..<(y + h) { for xx in x..<(x + w) { set(xx, yy, color) } }
    }

    /// A line `thickness` pixels wide (a square brush stepped along the longer axis).
    mutating func line(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, _ color: Color, thickness: Int = 1) {
        let steps = max(Int(max(abs(x1 - x0), abs(y1 - y0)).rounded(.up)), 1)
        for s in 0...steps {
            let t = Double(s) / Double(steps)
            let (x, y) = (Int((x0 + (x1 - x0) * t).rounded()), Int((y0 + (y1 - y0) * t).rounded()))
            fill(x: x - thickness / 2, y: y - thickness / 2, width: thickness, height: thickness, color)
        }
    }

    /// Text in the 5×7 font at `scale`, top-left at (x, y); returns its width.
    @discardableResult
    mutating func text(_ string: String, x: Int, y: Int, scale: Int = 2, _ color: Color = black) -> Int {
        for (i, character) in string.enumerated() {
            let rows = Font.glyph(character)
            for (r, bits) in rows.enumerated() {
                for c in 0..<5 where bits & (0x10 >> c) != 0 {
                    fill(x: x + (i * 6 + c) * scale, y: y + r * scale, width: scale, height: scale, color)
                }
            }
        }
        return Self.textWidth(string, scale: scale)
    }

    static func textWidth(_ string: String, scale: Int = 2) -> Int { max(string.count * 6 - 1, 0) * scale }

    /// One panel: grid and ticks of both axes, the series as lines (points marked when there are few), a legend
    /// at the top right, the title above.
    mutating func panel(title: String, series: [TrainingCurves.Series], frame: (x: Int, y: Int, width: Int, height: Int),
                        xRange: (Double, Double), xLabel: String?) {
        text(title, x: frame.x, y: frame.y - 28)
        let values = series.flatMap { $0.points.map(\.y) }
        let (yTicks, yRange) = NiceTicks.make(min: values.min() ?? 0, max: values.max() ?? 1)
        let (xTicks, _) = NiceTicks.make(min: xRange.0, max: xRange.1, exact: true)
        let px = { (x: Double) in Double(frame.x) + (x - xRange.0) / (xRange.1 - xRange.0) * Double(frame.width) }
        let py = { (y: Double) in Double(frame.y + frame.height) - (y - yRange.0) / (yRange.1 - yRange.0) * Double(frame.height) }
        for tick in yTicks {
            let y = Int(py(tick).rounded())
            line(Double(frame.x), Double(y), Double(frame.x + frame.width), Double(y), Self.grid)
            let label = NiceTicks.label(tick, step: yTicks.count > 1 ? yTicks[1] - yTicks[0] : 1)
            text(label, x: frame.x - 10 - Self.textWidth(label), y: y - 7, Self.gray)
        }
        for tick in xTicks {
            let x = Int(px(tick).rounded())
            line(Double(x), Double(frame.y), Double(x), Double(frame.y + frame.height), Self.grid)
            let label = NiceTicks.label(tick, step: xTicks.count > 1 ? xTicks[1] - xTicks[0] : 1)
            text(label, x: x - Self.textWidth(label) / 2, y: frame.y + frame.height + 8, Self.gray)
        }
        if let xLabel {
            text(xLabel, x: frame.x + frame.width / 2 - Self.textWidth(xLabel) / 2, y: frame.y + frame.height + 32)
        }
        let (left, right) = (Double(frame.x), Double(frame.x + frame.width))
        let (top, bottom) = (Double(frame.y), Double(frame.y + frame.height))
        for (a, b) in [((left, top), (right, top)), ((right, top), (right, bottom)), ((right, bottom), (left, bottom)),
                       ((left, bottom), (left, top))] {
            line(a.0, a.1, b.0, b.1, Self.black)
        }
        if values.isEmpty {
            let note = "no evaluation yet"
            text(note, x: frame.x + frame.width / 2 - Self.textWidth(note) / 2, y: frame.y + frame.height / 2 - 7, Self.gray)
            return
        }
        for (index, s) in series.enumerated() {
            let color = Self.palette[index % Self.palette.count]
            for (a, b) in zip(s.points, s.points.dropFirst()) { line(px(a.x), py(a.y), px(b.x), py(b.y), color, thickness: 2) }
            if s.points.count <= 30 {
                for p in s.points { fill(x: Int(px(p.x)) - 3, y: Int(py(p.y)) - 3, width: 7, height: 7, color) }
            }
        }
        // Legend: a colour swatch and the series name per line, right-aligned in the panel.
        let legendWidth = 40 + (series.map { Self.textWidth($0.name) }.max() ?? 0)
        for (index, s) in series.enumerated() {
            let y = frame.y + 12 + index * 22
            let x = frame.x + frame.width - legendWidth - 12
            line(Double(x), Double(y + 7), Double(x + 28), Double(y + 7), Self.palette[index % Self.palette.count], thickness: 3)
            text(s.name, x: x + 36, y: y)
        }
    }
}

/// Tick values at 1, 2 or 5 × 10ᵏ steps, about five per axis, and their labels.
enum NiceTicks {
    /// Ticks covering [min, max] and the axis range they imply (widened to whole steps unless `exact`).
    static func make(min lo: Double, max hi: Double, exact: Bool = false) -> ([Double], (Double, Double)) {
        var (low, high) = (lo, hi)
        if high - low < 1e-12 * max(abs(high), 1) {
            low -= max(abs(low) * 0.1, 1e-6)
            high += max(abs(high) * 0.1, 1e-6)
        }
        let raw = (high - low) / 5
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        let first = (low / step).rounded(.down) * step, last = (high / step).rounded(.up) * step
        let range = exact ? (low, high) : (first, last)
        var ticks: [Double] = []
        var tick = exact ? (low / step).rounded(.up) * step : first
        while tick <= range.1 + step * 1e-9 {
            ticks.append(abs(tick) < step * 1e-9 ? 0 : tick)
            tick += step
        }
        return (ticks, range)
    }

    /// Enough decimals for the step ("0.05", "1200"), or an exponent for tiny and huge values ("2e-05").
    static func label(_ value: Double, step: Double) -> String {
        if value == 0 { return "0" }
        if abs(value) < 1e-3 || abs(value) >= 1e6 { return String(format: "%.0e", value) }
        let decimals = max(0, Int((-log10(step)).rounded(.up)))
        return String(format: "%.\(decimals)f", value)
    }
}

/// A 5×7 bitmap font (rows top to bottom, bit 4 the leftmost column) for the digits, the letters and the
/// punctuation the plots use; other characters draw as a box.
enum Font {
    static func glyph(_ character: Character) -> [UInt8] { glyphs[character] ?? [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F] }

    static let glyphs: [Character: [UInt8]] = [
        " ": [0, 0, 0, 0, 0, 0, 0],
        "0": [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E], "1": [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        "2": [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F], "3": [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        "4": [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02], "5": [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        "6": [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E], "7": [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        "8": [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E], "9": [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ".": [0, 0, 0, 0, 0, 0x0C, 0x0C], "-": [0, 0, 0, 0x1F, 0, 0, 0], "+": [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        "%": [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03], "(": [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ")": [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08], "/": [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        ":": [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0], "_": [0, 0, 0, 0, 0, 0, 0x1F],
        "a": [0, 0, 0x0E, 0x01, 0x0F, 0x11, 0x0F], "b": [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        "c": [0, 0, 0x0E, 0x10, 0x10, 0x11, 0x0E], "d": [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        "e": [0, 0, 0x0E, 0x11, 0x1F, 0x10, 0x0E], "f": [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        "g": [0, 0, 0x0F, 0x11, 0x0F, 0x01, 0x0E], "h": [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        "i": [0x04, 0, 0x0C, 0x04, 0x04, 0x04, 0x0E], "j": [0x02, 0, 0x06, 0x02, 0x02, 0x12, 0x0C],
        "k": [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12], "l": [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        "m": [0, 0, 0x1A, 0x15, 0x15, 0x11, 0x11], "n": [0, 0, 0x16, 0x19, 0x11, 0x11, 0x11],
        "o": [0, 0, 0x0E, 0x11, 0x11, 0x11, 0x0E], "p": [0, 0, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        "q": [0, 0, 0x0D, 0x13, 0x0F, 0x01, 0x01], "r": [0, 0, 0x16, 0x19, 0x10, 0x10, 0x10],
        "s": [0, 0, 0x0E, 0x10, 0x0E, 0x01, 0x1E], "t": [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        "u": [0, 0, 0x11, 0x11, 0x11, 0x13, 0x0D], "v": [0, 0, 0x11, 0x11, 0x11, 0x0A, 0x04],
        "w": [0, 0, 0x11, 0x11, 0x15, 0x15, 0x0A], "x": [0, 0, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        "y": [0, 0, 0x11, 0x11, 0x0F, 0x01, 0x0E], "z": [0, 0, 0x1F, 0x02, 0x04, 0x08, 0x1F],
        "A": [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11], "B": [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        "C": [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E], "D": [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        "E": [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F], "F": [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        "G": [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F], "H": [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        "I": [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E], "L": [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        "M": [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11], "N": [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        "O": [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E], "P": [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        "R": [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11], "S": [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        "T": [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04], "U": [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        "V": [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04], "W": [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        "X": [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11], "Y": [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        "Z": [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
    ]
}
