import Foundation
import FinchFormats
import FinchModels
import FinchTensor

/// A LoRA adapter as llama.cpp loads one (`llama-cli --lora FILE`, `Llama(lora_path=…)`): a GGUF file with
/// `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and for each adapted matrix
/// `NAME.lora_a` [rank, in] and `NAME.lora_b` [out, rank] under the base tensor's name. llama.cpp scales each
/// product by alpha / rank; B's rows are in llama.cpp's order where it differs (`RowOrder`), as the base matrices' are.
public enum GGUFLoRAFormat {
    /// Writes `lora` (injected into `model`, whose GGUF architecture is `architecture`) to `path`.
    ///
    /// The file carries one alpha: the first layer's scale times its rank (for rsLoRA, alpha·√r, so alpha / r is
    /// rsLoRA's alpha / √r). A layer whose rank or alpha differs (`rank_pattern`, `alpha_pattern`) has the ratio
    /// of its scale to alpha / its rank folded into its B, so every product keeps its own scale.
    public static func write(_ lora: LoRAAdapter, model: any CausalLanguageModel, architecture: String,
                             to path: String) throws {
        if let embedding = lora.embeddings.first {
            throw AdapterError("a GGUF LoRA adapter holds LoRA on linear layers only; this adapter also adapts '\(embedding.path)'. Export the merged model with --format gguf instead")
        }
        if let saved = lora.savedModules.first {
            throw AdapterError("a GGUF LoRA adapter cannot carry the whole module '\(saved.path)' that this adapter trains (modules_to_save). Export the merged model with --format gguf instead")
        }
        if lora.configuration.useDoRA {
            throw AdapterError("llama.cpp's LoRA adapters have no DoRA magnitudes; export the merged model with --format gguf instead")
        }
        guard let first = lora.layers.first else { throw AdapterError("the adapter has no LoRA layers to write") }
        let alpha = first.layer.scaling * Float(first.layer.rank)
        var tensors: [GGUFWriter.Tensor] = []
        for (path, layer) in lora.layers {
            guard let name = GGUFModel.ggufName(path + ".weight", in: model.config) else {
                throw AdapterError("module '\(path)' has no GGUF tensor name")
            }
            let a = layer.lora_A.weight.scalars
            var b = layer.lora_B.weight.scalars
            let fold = layer.scaling / (alpha / Float(layer.rank))
            if fold != 1 { for i in b.indices { b[i] *= fold } }
            if let order = GGUFModel.rowOrder(name, in: model.config) {
                b.withUnsafeMutableBufferPointer { order.toGGUF($0, rowLength: layer.rank) }
            }
            for (suffix, values, shape) in [("lora_a", a, layer.lora_A.weight.shape), ("lora_b", b, layer.lora_B.weight.shape)] {
                guard values.allSatisfy(\.isFinite) else {
                    throw AdapterError("tensor '\(name).\(suffix)' is not finite; nothing was written")
                }
                tensors.append(GGUFWriter.Tensor(name: "\(name).\(suffix)", shape: shape, type: .f32,
                                                 bytes: values.withUnsafeBufferPointer { GGUFQuantization.quantize($0, as: .f32) }))
            }
        }
        let metadata: [(key: String, value: GGUFValue)] = [
            ("general.architecture", .string(architecture)), ("general.type", .string("adapter")),
            ("adapter.type", .string("lora")), ("adapter.lora.alpha", .float32(alpha)),
        ]
        try GGUFWriter.write(metadata: metadata, tensors: tensors, to: path)
    }
}
