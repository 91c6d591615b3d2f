import Foundation
import Testing
import TestSupport
@testable import FinchTraining

/// The RDP accountant against Opacus' (Tests/Fixtures/privacy): the same ε, at the same order, on a grid of settings.
@Suite("RDP accountant")
struct RDPAccountantTests {
    struct Setting: Decodable { let q: Double, sigma: Double, steps: Int, delta: Double, epsilon: Double, order: Double }
    struct Order: Decodable { let q: Double, sigma: Double, order: Double, rdp: Double }
    struct History: Decodable { let segments: [RDPAccountant.Segment], delta: Double, epsilon: Double, order: Double }
    struct Noise: Decodable { let epsilon: Double, delta: Double, q: Double, steps: Int, sigma: Double }
    struct File: Decodable { let epsilon: [Setting], rdp: [Order], history: History, noise: [Noise] }

    static func reference() throws -> File {
        try JSONDecoder().decode(File.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("privacy", "reference.json"))))
    }

    @Test func epsilonMatchesOpacusOnTheGrid() throws {
        let file = try Self.reference()
        for s in file.epsilon {
            var accountant = RDPAccountant()
            for _ in 0..<s.steps { accountant.step(sampleRate: s.q, noiseMultiplier: s.sigma) }
            let (epsilon, order) = accountant.epsilon(delta: s.delta)
            #expect(abs(epsilon - s.epsilon) <= 1e-9 * max(1, abs(s.epsilon)) && order == s.order,
                    "q \(s.q) σ \(s.sigma) steps \(s.steps) δ \(s.delta): \(epsilon) at \(order) vs \(s.epsilon) at \(s.order)")
        }
        for r in file.rdp {
            let mine = RDPAccountant.rdp(q: r.q, sigma: r.sigma, alpha: r.order)
            #expect(abs(mine - r.rdp) <= 1e-8 * abs(r.rdp) + 1e-13, "q \(r.q) σ \(r.sigma) α \(r.order): \(mine) vs \(r.rdp)")
        }
    }

    /// Two settings one after the other (a resumed run with another batch size), and the state through JSON.
    @Test func aHistoryOfSettingsAndItsStateRoundTrip() throws {
        let h = try Self.reference().history
        var accountant = RDPAccountant()
        for segment in h.segments {
            for _ in 0..<segment.steps { accountant.step(sampleRate: segment.sampleRate, noiseMultiplier: segment.noiseMultiplier) }
        }
        #expect(accountant.history == h.segments)
        let restored = try JSONDecoder().decode(RDPAccountant.self, from: JSONEncoder().encode(accountant))
        #expect(restored == accountant)
        let (epsilon, order) = restored.epsilon(delta: h.delta)
        #expect(abs(epsilon - h.epsilon) <= 1e-9 * h.epsilon && order == h.order, "\(epsilon) at \(order) vs \(h.epsilon) at \(h.order)")
        var noiseless = RDPAccountant()
        noiseless.step(sampleRate: 0.1, noiseMultiplier: 0)
        #expect(noiseless.epsilon(delta: 1e-5).epsilon == .infinity)
    }

    /// A target ε picks the noise multiplier Opacus' get_noise_multiplier picks.
    @Test func aTargetEpsilonPicksOpacusNoise() throws {
        for n in try Self.reference().noise {
            let sigma = RDPAccountant.noiseMultiplier(targetEpsilon: n.epsilon, delta: n.delta, sampleRate: n.q, steps: n.steps)
            #expect(sigma == n.sigma, "ε \(n.epsilon) q \(n.q) steps \(n.steps): \(String(describing: sigma)) vs \(n.sigma)")
        }
        #expect(RDPAccountant.noiseMultiplier(targetEpsilon: 1e-9, delta: 1e-5, sampleRate: 0.5, steps: 10_000) == nil)
    }
}
