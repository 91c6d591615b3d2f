// swift-tools-version:6.0
import PackageDescription

// Layers point down only: CBLAS ← FinchTensor ← FinchNN ← FinchModels ← FinchAdapters ← FinchTraining ←
// FinchBenchmarks ← finch, with FinchFormats (files, no tensors) beside FinchTensor. ARCHITECTURE.md has the whole picture.

// By default Finch builds for the baseline of its architecture, so a binary runs wherever it is copied and the
// libraries can be a dependency (SwiftPM refuses unsafe flags in dependencies). FINCH_TARGET_CPU=native compiles
// Finch's own code for the building CPU (its eight-lane SIMD kernels then use that CPU's vector width; on x86-64
// the baseline has 128-bit SSE only): faster, bitwise the same, but the binary runs only on CPUs like that one.
// scripts/quickstart and the benchmark instructions in README.md opt in; any other -target-cpu name works too.
let targetCPU = Context.environment["FINCH_TARGET_CPU"] ?? ""
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
        .library(name: "FinchBenchmarks", targets: ["FinchBenchmarks"]),
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
        .target(name: "FinchTraining", dependencies: ["FinchAdapters", .product(name: "Yams", package: "Yams")],
                swiftSettings: finchSettings),
        // The workloads `finch bench` times: recipes run by FinchTraining's Trainer over models built in memory.
        .target(name: "FinchBenchmarks", dependencies: ["FinchTraining"], swiftSettings: finchSettings),
        .executableTarget(
            name: "finch",
            dependencies: [
                "FinchTensor", "FinchFormats", "FinchNN", "FinchModels", "FinchAdapters", "FinchTraining", "FinchBenchmarks",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: finchSettings
        ),
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(
            name: "FinchTensorTests",
            dependencies: ["FinchTensor", "TestSupport"]
        ),
        .testTarget(
            name: "FinchNNTests",
            dependencies: ["FinchNN", "FinchTensor"]
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
            name: "FinchBenchmarksTests",
            dependencies: ["FinchBenchmarks"]
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
