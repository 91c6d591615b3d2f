import Foundation
import FinchFormats

/// What a config asks to be allocated, checked before anything is: a `config.json` with a mistyped size
/// (`hidden_size: 40960000`) would otherwise stop the process in the allocator, with no word of which key.
public enum ModelSize {
    /// The parameters of the model `config` describes, or nil when the count overflows `Int`. Counted from
    /// the same shapes the architectures build (a test compares it with built models).
    public static func parameterCount(_ config: ModelConfig) -> Int? {
        switch config {
        case .llama(let c):
            let h = c.hiddenSize, i = c.intermediateSize
            guard let q = sumOfProducts([[c.headCount, c.headDimension]]),
                  let kv = sumOfProducts([[c.keyValueHeadCount, c.headDimension]]) else { return nil }
            var layer = [[h, q], [h, kv], [h, kv], [q, h], [3, h, i]]  // q, k, v, o; gate, up, down
            // The norms: two (Cohere: one, and with use_qk_norm per-head ones for q and k).
            layer += c.family == .cohere ? [[h]] + (c.useQKNorm ? [[q], [kv]] : []) : [[2, h]]
            if c.attentionBias { layer += [[q], [kv], [kv]] }
            if c.attentionOutputBias { layer += [[h]] }
            if c.mlpBias { layer += [[2, i], [h]] }
            guard let perLayer = sumOfProducts(layer) else { return nil }
            return sumOfProducts([[c.vocabularySize, h], [perLayer, c.layerCount], [h]]
                                 + (c.tieWordEmbeddings ? [] : [[c.vocabularySize, h]]))
        case .gpt2(let c):
            let e = c.embeddingSize, i = c.innerSize
            // Two LayerNorms; c_attn and c_proj; c_fc and the MLP's c_proj, each with its bias.
            guard let perLayer = sumOfProducts([[4, e], [e, 3, e], [3, e], [e, e], [e], [e, i], [i], [i, e],
                                                [e]]) else { return nil }
            return sumOfProducts([[c.vocabularySize, e], [c.maxPositions, e], [perLayer, c.layerCount], [2, e]])
        case .gptNeoX(let c):
            let h = c.hiddenSize, i = c.intermediateSize
            // Two LayerNorms; query_key_value and dense (biases as the config says); the MLP's two, with biases.
            var layer = [[4, h], [h, 3, h], [h, h], [h, i], [i], [i, h], [h]]
            if c.attentionBias { layer += [[3, h], [h]] }
            guard let perLayer = sumOfProducts(layer) else { return nil }
            return sumOfProducts([[c.vocabularySize, h], [perLayer, c.layerCount], [2, h]]
                                 + (c.tieWordEmbeddings ? [] : [[c.vocabularySize, h]]))
        case .gptNeo(let c):
            let h = c.hiddenSize, i = c.intermediateSize
            // Two LayerNorms; q, k, v and out_proj (its bias); c_fc and c_proj with biases.
            guard let perLayer = sumOfProducts([[4, h], [4, h, h], [h], [h, i], [i], [i, h], [h]]) else { return nil }
            return sumOfProducts([[c.vocabularySize, h], [c.maxPositionEmbeddings, h], [perLayer, c.layerCount], [2, h]])
        }
    }

    /// Values built beside the parameters: the rotary table (cosines and sines for every position).
    static func tableCount(_ config: ModelConfig) -> Int? {
        switch config {
        case .llama(let c): sumOfProducts([[c.maxPositionEmbeddings, c.headDimension]])
        case .gptNeoX(let c): sumOfProducts([[c.maxPositionEmbeddings, c.rotaryDimensions]])
        case .gpt2, .gptNeo: 0
        }
    }

    /// Refuses, naming `path` and the sizes, a config whose parameters and tables would not fit in this
    /// machine's memory as float32, saying so when they also outnumber the values `checkpoint` holds (the
    /// config cannot be these weights'). A config that fits is left to the per-tensor shape checks, whose
    /// messages name the tensor.
    public static func check(_ config: ModelConfig, path: String, against checkpoint: SafetensorsCheckpoint?,
                             memoryBytes: Int = physicalMemoryBytes) throws {
        let sizes = describe(config)
        guard let parameters = parameterCount(config), let table = tableCount(config) else {
            throw FormatError(file: path, "\(sizes) describe more values than can be counted; is one of them mistyped?")
        }
        let bytes = sumOfProducts([[4, parameters], [4, table]])
        if let bytes, bytes <= memoryBytes { return }
        if let checkpoint, let held = sumOfProducts(checkpoint.names.map { [checkpoint.entry(named: $0)?.elementCount ?? 0] }),
           parameters > held {
            throw FormatError(file: path, "\(sizes) describe \(parameters) parameters, but the weights in \(checkpoint.folder) hold \(held) values: this config.json does not belong to them")
        }
        throw FormatError(file: path, "\(sizes) describe \(parameters) parameters and \(table) rotary-table values, \(gigabytes(bytes)) as float32, more than this machine's \(gigabytes(memoryBytes)) of memory")
    }

    public static var physicalMemoryBytes: Int {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), pageSize = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, pageSize > 0 else { return Int.max }
        return pages.multipliedReportingOverflow(by: pageSize).overflow ? Int.max : pages * pageSize
    }

    static func describe(_ config: ModelConfig) -> String {
        switch config {
        case .llama(let c):
            return "the sizes (vocab_size \(c.vocabularySize), hidden_size \(c.hiddenSize), intermediate_size \(c.intermediateSize), num_hidden_layers \(c.layerCount), num_attention_heads \(c.headCount), head_dim \(c.headDimension), max_position_embeddings \(c.maxPositionEmbeddings))"
        case .gpt2(let c):
            return "the sizes (vocab_size \(c.vocabularySize), n_embd \(c.embeddingSize), n_inner \(c.innerSize), n_layer \(c.layerCount), n_positions \(c.maxPositions))"
        case .gptNeoX(let c):
            return "the sizes (vocab_size \(c.vocabularySize), hidden_size \(c.hiddenSize), intermediate_size \(c.intermediateSize), num_hidden_layers \(c.layerCount), max_position_embeddings \(c.maxPositionEmbeddings))"
        case .gptNeo(let c):
            return "the sizes (vocab_size \(c.vocabularySize), hidden_size \(c.hiddenSize), intermediate_size \(c.intermediateSize), num_layers \(c.layerCount), max_position_embeddings \(c.maxPositionEmbeddings))"
        }
    }

    public static func gigabytes(_ bytes: Int?) -> String {
        guard let bytes else { return "more bytes than can be counted" }
        return String(format: "%.1f GB", Double(bytes) / 1e9)
    }

    /// The sum of each term's product of factors, or nil when any product or sum overflows `Int`.
    public static func sumOfProducts(_ terms: [[Int]]) -> Int? {
        var sum = 0
        for factors in terms {
            var product = 1
            for f in factors {
                let (p, overflow) = product.multipliedReportingOverflow(by: f)
                if overflow { return nil }
                product = p
            }
            let (s, overflow) = sum.addingReportingOverflow(product)
            if overflow { return nil }
            sum = s
        }
        return sum
    }
}
