// swift-tools-version:6.0
import PackageDescription

// Layers point down only: CBLAS ← FinchTensor ← (FinchNN, FinchModels, ...) ← finch.
// See DESIGN.md in ../shared for the whole picture.
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
            dependencies: ["CBLAS"]
        ),
        // Safetensors, config.json and tokenizer.json: Foundation only, no tensors, so it can be fuzzed alone.
        .target(name: "FinchFormats"),
        .target(name: "FinchNN", dependencies: ["FinchTensor"]),
        .target(name: "FinchModels", dependencies: ["FinchNN", "FinchFormats"]),
        .target(name: "FinchAdapters", dependencies: ["FinchModels"]),
        .target(name: "FinchTraining", dependencies: ["FinchAdapters", .product(name: "Yams", package: "Yams")]),
        .executableTarget(
            name: "finch",
            dependencies: [
                "FinchTensor", "FinchFormats", "FinchNN", "FinchModels", "FinchAdapters", "FinchTraining",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
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
