// swift-tools-version:6.0
import PackageDescription

// Layers point down only: CBLAS ← FinchTensor ← (FinchNN, FinchModels, ...) ← finch.
// See DESIGN.md in ../shared for the whole picture.

// Finch's own code is compiled for the CPU it is built on, so its eight-lane SIMD kernels use that CPU's vector
// width (on x86-64 the default target has only 128-bit SSE: every SIMD8 operation became two; with AVX, W1
// LoRA training runs ~9 % faster, bitwise the same, as Swift never fuses a multiply and an add on its own).
// A binary built this way runs on CPUs like the one that built it. FINCH_TARGET_CPU names another target
// (x86-64 for a portable binary, haswell for any AVX2 machine); set it empty to pass no flag at all.
let targetCPU = Context.environment["FINCH_TARGET_CPU"] ?? "native"
let finchSettings: [SwiftSetting] = targetCPU.isEmpty ? [] : [.unsafeFlags(["-target-cpu", targetCPU])]
let package = Package(
    name: "Finch",
    products: [
        .executable(name: "finch", targets: ["finch"]),
        .library(name: "FinchTensor", targets: ["FinchTensor"]),
        .library(name: "FinchFormats", targets: ["FinchFormats"]),
        .library(name: "FinchNN", targets: ["FinchNN"]),
        .library(name: "FinchModels", targets: ["FinchModels"]),
        .library(name: "FinchAdapters", targets: ["FinchAdapters"]),
        .library(name: "FinchTraining", targets: ["FinchTraining"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // OpenBLAS's cblas.h (Debian: libopenblas-dev). The only C in the project.
        .systemLibrary(
            name: "CBLAS",
            path: "Sources/CBLAS",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(
            name: "FinchTensor",
            dependencies: ["CBLAS"],
            swiftSettings: finchSettings
        ),
        // Safetensors, config.json and tokenizer.json: Foundation only, no tensors, so it can be fuzzed alone.
        .target(name: "FinchFormats", swiftSettings: finchSettings),
        .target(name: "FinchNN", dependencies: ["FinchTensor"], swiftSettings: finchSettings),
        .target(name: "FinchModels", dependencies: ["FinchNN", "FinchFormats"], swiftSettings: finchSettings),
        .target(name: "FinchAdapters", dependencies: ["FinchModels"], swiftSettings: finchSettings),
        .target(name: "FinchTraining", dependencies: ["FinchAdapters", .product(name: "Yams", package: "Yams")], swiftSettings: finchSettings),
        .executableTarget(
            name: "finch",
            dependencies: [
                "FinchTensor", "FinchFormats", "FinchNN", "FinchModels", "FinchAdapters", "FinchTraining",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: finchSettings
        ),
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(
            name: "FinchTensorTests",
            dependencies: ["FinchTensor"]
        ),
        .testTarget(
            name: "FinchModelsTests",
            dependencies: ["FinchModels", "TestSupport"]
        ),
        .testTarget(
            name: "FinchAdaptersTests",
            dependencies: ["FinchAdapters", "TestSupport"]
        ),
        .testTarget(
            name: "FinchTrainingTests",
            dependencies: ["FinchTraining", "TestSupport"]
        ),
        .testTarget(
            name: "FinchCLITests",
            dependencies: ["finch", "TestSupport"]
        ),
        .testTarget(
            name: "FinchFormatsTests",
            dependencies: ["FinchFormats", "TestSupport"]
        ),
    ]
)
