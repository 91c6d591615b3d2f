import Foundation
import Testing
@testable import FinchTraining

/// Every recipe in recipes/ must load strictly (keys, types, ranges).
@Suite("shipped recipes")
struct ShippedRecipeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func everyShippedRecipeLoads() throws {
        let folder = Self.root.appendingPathComponent("recipes").path
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(names.count >= 8)
        for name in names {
            let loaded = try RecipeLoader.load(path: "\(folder)/\(name)")
            #expect(loaded.recipe.outputDirectory == "runs/" + name.replacingOccurrences(of: ".yaml", with: ""))
            #expect(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(loaded.recipe.trainData).path), "\(name): \(loaded.recipe.trainData)")
        }
    }
}
