import Foundation
import Testing
@testable import FinchTraining

/// Every recipe in recipes/ must load strictly (keys, types, ranges).
@Suite("shipped recipes")
struct ShippedRecipeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// recipes/NAME.yaml writes runs/NAME; a recipe in a subfolder, recipes/DIR/NAME.yaml, writes runs/DIR/NAME.
    @Test func everyShippedRecipeLoads() throws {
        let folder = Self.root.appendingPathComponent("recipes").path
        let names = try FileManager.default.subpathsOfDirectory(atPath: folder).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(names.count >= 8)
        for name in names {
            let loaded = try RecipeLoader.load(path: "\(folder)/\(name)")
            #expect(loaded.recipe.outputDirectory == "runs/" + name.replacingOccurrences(of: ".yaml", with: ""), "\(name)")
            #expect(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(loaded.recipe.trainData).path), "\(name): \(loaded.recipe.trainData)")
        }
    }
}
