// swift-tools-version:6.0
import PackageDescription

// Layers point down only: CBLAS ← FinchTensor ← (FinchNN, FinchModels, ...) ← finch.
// See DESIGN.md in ../shared for the whole picture.
let package = Package(
    name: "Finch",
    products: [
        .executable(name: "finch", targets: ["finch"]),
        .library(name: "FinchTensor", targets: ["FinchTensor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
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
        .executableTarget(
            name: "finch",
            dependencies: [
                "FinchTensor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "FinchTensorTests",
            dependencies: ["FinchTensor"]
        ),
    ]
)
