import Foundation
import Testing
import TestSupport
@testable import FinchFormats

@Suite("config.json")
struct ConfigTests {
    @Test func readsBothFixtureFamilies() throws {
        guard case .llama(let llama) = try ModelConfig.load(path: Fixtures.path("llama-gqa", "base/config.json")) else {
            Issue.record("llama-gqa is not llama"); return
        }
        #expect(llama.hiddenSize == 64 && llama.layerCount == 2 && llama.headCount == 4 && llama.keyValueHeadCount == 2)
        #expect(llama.headDimension == 16 && llama.intermediateSize == 176 && llama.vocabularySize == 768)
        #expect(llama.ropeTheta == 10_000 && llama.rmsNormEpsilon == 1e-5 && !llama.tieWordEmbeddings)
        #expect(llama.bosTokenId == 1 && llama.eosTokenIds == [2])
        guard case .gpt2(let gpt2) = try ModelConfig.load(path: Fixtures.path("gpt2", "base/config.json")) else {
            Issue.record("gpt2 is not gpt2"); return
        }
        #expect(gpt2.embeddingSize == 64 && gpt2.layerCount == 2 && gpt2.headCount == 4 && gpt2.innerSize == 256)
        #expect(gpt2.activation == .geluTanh && gpt2.tieWordEmbeddings && gpt2.maxPositions == 256)
    }

    static let llama = #"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2"#

    @Test func ropeThetaAtTheTopLevelToo() throws {
        let config = try ModelConfig.parse(Data((Self.llama + #","rope_theta":500000.0}"#).utf8), path: "c.json")
        guard case .llama(let c) = config else { Issue.record("not llama"); return }
        #expect(c.ropeTheta == 500_000 && c.keyValueHeadCount == 2 && c.headDimension == 4)
    }

    /// `text` is refused with a FormatError naming the file and containing `fragment`.
    static func refuse(_ text: String, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try ModelConfig.parse(Data(text.utf8), path: "x/config.json")
            Issue.record("accepted \(text)", sourceLocation: sourceLocation)
        } catch let e as FormatError {
            #expect(e.file == "x/config.json" && e.message.contains(fragment), "\(e)",
                    sourceLocation: sourceLocation)
        } catch {
            Issue.record("\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func refusesWhatFinchDoesNotImplementByName() {
        let refuse = { (text: String, fragment: String) in Self.refuse(text, fragment) }
        refuse(#"{"model_type":"mixtral"}"#, "model_type \"mixtral\" is not supported (Finch implements \"llama\", \"qwen2\", \"mistral\", \"cohere\", \"gpt2\", \"gpt_neox\", \"gpt_neo\")")
        refuse(#"{"hidden_size":8}"#, "missing \"model_type\"")
        refuse(Self.llama + #","rope_scaling":{"rope_type":"yarn","factor":4}}"#, "rope_scaling type \"yarn\"")
        refuse(Self.llama + #","rope_parameters":{"rope_type":"llama3","rope_theta":1}}"#, "\"llama3\"")
        refuse(Self.llama + #","hidden_act":"gelu"}"#, "hidden_act \"gelu\"")
        refuse(Self.llama + #","num_key_value_heads":3}"#, "not a multiple")
        refuse(Self.llama + #","rms_norm_eps":-1}"#, "rms_norm_eps must be 0 or positive, got -1.0")
        refuse(Self.llama + #","rope_theta":0}"#, "rope_theta must be positive, got 0.0")
        refuse(Self.llama + #","max_position_embeddings":0}"#, "max_position_embeddings")
        refuse(#"{"model_type":"gpt2","vocab_size":10,"n_embd":8,"n_layer":1,"n_head":2,"layer_norm_epsilon":-0.1}"#,
               "layer_norm_epsilon must be 0 or positive")
        refuse(#"{"model_type":"llama","vocab_size":10,"hidden_size":"8"}"#, "\"hidden_size\" must be an integer")
        refuse(#"{"model_type":"llama","vocab_size":10}"#, "missing \"hidden_size\"")
        refuse(#"{"model_type":"gpt2","vocab_size":10,"n_embd":8,"n_layer":1,"n_head":2,"activation_function":"relu"}"#, "activation_function \"relu\"")
        refuse("{not json", "not valid JSON")
        // Found by the config fuzzer: a head count of 0 divided hidden_size for head_dim's default and trapped.
        refuse(#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":0}"#,
               "num_attention_heads")
        let mistral = Self.llama.replacingOccurrences(of: "\"llama\"", with: "\"mistral\"")
        refuse(mistral + #","sliding_window":0}"#, "sliding_window must be positive, got 0")
        refuse(Self.llama + #","layer_types":["full_attention","chunked_attention"]}"#, "layer_types entry \"chunked_attention\"")
        refuse(Self.llama + #","layer_types":["sliding_attention"]}"#, "which llama does not have")
    }

    /// The other families refuse what Finch does not implement by key and value too, and values that would not fit a
    /// head before anything is computed from them.
    @Test func theOtherFamiliesRefuseWhatFinchDoesNotImplementByName() {
        let refuse = { (text: String, fragment: String) in Self.refuse(text, fragment) }
        let neox = #"{"model_type":"gpt_neox","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2"#
        refuse(neox + #","rope_scaling":{"rope_type":"linear","factor":2}}"#, "rope_scaling type \"linear\"")
        refuse(neox + #","hidden_act":"relu"}"#, "hidden_act \"relu\"")
        refuse(neox + #","rotary_pct":1e300}"#, "partial_rotary_factor (rotary_pct) must be from 0 to 1, got 1e+300")
        refuse(neox + #","rotary_pct":0.75}"#, "must be even")
        let neo = #"{"model_type":"gpt_neo","vocab_size":10,"hidden_size":8,"num_layers":2,"num_heads":2,"max_position_embeddings":16"#
        refuse(neo + #","attention_types":[[["global","sparse"],1]]}"#, "attention type \"sparse\" is not supported")
        refuse(neo + #","activation_function":"relu"}"#, "activation_function \"relu\"")
        refuse(neo + #","attention_types":[[["global"],1]]}"#, "attention_layers has 1 entries for num_layers 2")
        let cohere = Self.llama.replacingOccurrences(of: "\"llama\"", with: "\"cohere\"")
        refuse(cohere + #","rope_scaling":{"rope_type":"dynamic","factor":2}}"#, "rope_scaling type \"dynamic\"")
        refuse(cohere + #","hidden_act":"gelu"}"#, "hidden_act \"gelu\"")
        refuse(cohere + #","logit_scale":-1}"#, "logit_scale must be positive")
    }

    /// Qwen2 has q/k/v biases and no o bias; Qwen2's sliding window counts only when use_sliding_window or
    /// layer_types asks for it; Mistral's null window is none.
    @Test func qwen2AndMistralAreLlamaWithTheirDifferences() throws {
        let qwen2 = Self.llama.replacingOccurrences(of: "\"llama\"", with: "\"qwen2\"")
        guard case .llama(let q) = try ModelConfig.parse(Data((qwen2 + #","sliding_window":4,"max_position_embeddings":64}"#).utf8), path: "c.json") else {
            Issue.record("qwen2 is not read as the LLaMA decoder"); return
        }
        #expect(q.family == .qwen2 && q.attentionBias && !q.attentionOutputBias && q.slidingWindow == nil)
        guard case .llama(let windowed) = try ModelConfig.parse(Data((qwen2 + #","sliding_window":4,"use_sliding_window":true,"max_position_embeddings":64}"#).utf8), path: "c.json") else {
            Issue.record("qwen2 is not read as the LLaMA decoder"); return
        }
        #expect(windowed.slidingWindow == 4 && windowed.maxPositionEmbeddings == 64)
        let mistral = Self.llama.replacingOccurrences(of: "\"llama\"", with: "\"mistral\"")
        let short = try ModelConfig.parse(Data((mistral + #","sliding_window":16,"max_position_embeddings":64}"#).utf8), path: "c.json")
        #expect(short.maxPositions == 64 && short.maxPositionsKey == "max_position_embeddings")
        let none = try ModelConfig.parse(Data((mistral + #","sliding_window":null}"#).utf8), path: "c.json")
        guard case .llama(let m) = none else { Issue.record("mistral is not read as the LLaMA decoder"); return }
        #expect(m.family == .mistral && m.slidingWindow == nil && !m.attentionBias)
    }
}
