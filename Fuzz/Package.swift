// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets for every parser of outside input, in a package of their own: a fuzzer has no main (libFuzzer
// brings it), so it links only with `--sanitize=fuzzer`, and a plain `swift build` of Finch must not try. It also
// uses Finch's libraries as any dependent package would. Build and run it through scripts/fuzz, which passes
// the sanitizer flags.
let package = Package(
    name: "FinchFuzz",
    dependencies: [.package(name: "Finch", path: "..")],
    targets: [
        .executableTarget(
            name: "finch-fuzz",
            dependencies: [
                .product(name: "FinchTensor", package: "Finch"),
                .product(name: "FinchFormats", package: "Finch"),
                .product(name: "FinchModels", package: "Finch"),
                .product(name: "FinchAdapters", package: "Finch"),
                .product(name: "FinchTraining", package: "Finch"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])],
            // lld registers every object's coverage counters with libFuzzer; with gold it saw about a tenth of them.
            linkerSettings: [.unsafeFlags(["-use-ld=lld"])]
        ),
    ]
)
