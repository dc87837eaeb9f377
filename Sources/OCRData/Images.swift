/// An 8-bit image: rows top to bottom, channels interleaved, `pixels` is H×W×C (C = 3 for RGB). Images stay 8-bit
/// through the augmentation pipeline, as in mmseg (each photometric step clips and truncates back to uint8), and
/// become float only at normalisation.
public struct PixelImage: Equatable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels,
                     "\(pixels.count) bytes for a \(width)×\(height)×\(channels) image")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    public init(width: Int, height: Int, channels: Int, filledWith value: UInt8 = 0) {
        self.init(width: width, height: height, channels: channels,
                  pixels: [UInt8](repeating: value, count: width * height * channels))
    }
}

/// A class-index map H×W, one byte per pixel; `LabelImage.ignore` (255) marks pixels that count for nothing.
public struct LabelImage: Equatable {
    public static let ignore: UInt8 = 255

    public var width: Int
    public var height: Int
    public var values: [UInt8]

    public init(width: Int, height: Int, values: [UInt8]) {
        precondition(values.count == width * height, "\(values.count) labels for a \(width)×\(height) map")
        self.width = width
        self.height = height
        self.values = values
    }

    public init(width: Int, height: Int, filledWith value: UInt8) {
        self.init(width: width, height: height, values: [UInt8](repeating: value, count: width * height))
    }
}

/// A bad input file: the description names the file and what is wrong with it, e.g.
/// `data/x_gtFine_labelTrainIds.png: label is 1024×512 but its image is 2048×1024`.
public struct DataError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let problem: String

    public init(_ path: String, _ problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(path): \(problem)" }
}
