"""The embedder's ONNX graph, rebuilt from the pinned all-MiniLM-L6-v2 file with ONNX Runtime's fused kernels.

Why: the pinned file is a PyTorch export with about 300 small nodes (attention spelled out as Reshape,
Transpose, MatMul, Where, IsNaN...) whose int8 weights are only storage: ONNX Runtime folds them back to
float32 and runs float32 GEMMs, which already reach this core's float32 peak. A 20-token question then
costs ~7 ms, 256 tokens ~70 ms. The rebuilt graph has the same weights and the same arithmetic, expressed
with the contrib kernels made for BERT (EmbedLayerNormalization, MultiHeadAttention, Gelu; residuals as
Add + LayerNormalization, see build_graph: 67 nodes), and runs the linear layers either in float32 (MatMul,
numerically the original) or in int8 (DynamicQuantizeMatMul on the file's own int8 weights and per-column
scales, with the activations quantized per call: ~3.5x the float32 throughput on AVX512-VNNI).

It is built in memory at start-up from the pinned file (no download, nothing cached on disk): the `onnx`
package reads the file and builds the new model, which is handed to ONNX Runtime serialized.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["DISABLED_OPTIMIZERS", "LAYERS", "build_graph"]

LAYERS = 6
HEADS = 12
HIDDEN = 384
EPSILON = 1e-12  # the model's LayerNorm epsilon
# Fusions the session must not apply to the rebuilt graph (see build_graph).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
# Operator sets the rebuilt graph uses, and the IR version that goes with opset 17 (ONNX 1.12), which every
# ONNX Runtime in the dependency range reads. make_model's default is the installed onnx's newest IR version
# (14 in onnx 1.23: ONNX Runtime 1.32 reads it, 1.18 reads up to 10).
OPSETS = (("", 17), ("com.microsoft", 1))
IR_VERSION = 8


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, *, domain: str = "",
             **attributes: int | float | str) -> list[str]:
        self._count += 1
        names = outputs if isinstance(outputs, list) else [f"{op}_{self._count}_{i}" for i in range(outputs)]
        node = helper.make_node(op, inputs, names, name=f"{op}_{self._count}", domain=domain or None)
        node.attribute.extend(helper.make_attribute(key, value) for key, value in sorted(attributes.items()))
        self.nodes.append(node)
        return names

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "minilm", inputs, outputs, self.initializers)
        return helper.make_model(graph, producer_name="mmproxy", ir_version=IR_VERSION,
                                 opset_imports=[helper.make_opsetid(domain, version) for domain, version in OPSETS])


# ---- the rebuilt graph ----

def _weights(tensors: dict[str, np.ndarray], nodes: Sequence[onnx.NodeProto]) -> dict[str, str]:
    """Bias name -> name of the weight of the MatMul it is added to (the export names weights val_N)."""
    made_by = {o: n for n in nodes for o in n.output}
    out: dict[str, str] = {}
    for n in nodes:
        if n.op_type == "Add" and len(n.input) == 2 and n.input[1].endswith(".bias"):
            source = made_by.get(n.input[0])
            if source is not None and source.op_type == "MatMul" and source.input[1] + "_q" in tensors:
                out[n.input[1]] = source.input[1]
    return out

def _dequantized(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The float32 weight the original graph computes (Cast to float, then Mul by the scale)."""
    return (tensors[name + "_q"].astype(np.float32) * tensors[name + "_scale"]).astype(np.float32)


def build_graph(data: bytes, *, int8: bool) -> bytes:
    """The serialized fused model for the pinned file `data`.

    Inputs `input_ids` and `attention_mask` (int32, batch x width, padding on the right); output
    `last_hidden_state` (float32, batch x width x 384), as the original. `int8`: the 36 linear layers
    run as DynamicQuantizeMatMul on the stored int8 weights (activations quantized per tensor, per call)
    instead of float32 MatMul on their dequantized values.

    Residual additions stay Add + LayerNormalization: ONNX Runtime's SkipLayerNormalization kernel
    measured ~8x slower than the pair on this CPU (0.49 ms against 0.08 ms at 256 tokens), so the
    session must also disable its SkipLayerNormFusion (see `DISABLED_OPTIMIZERS`).
    """
    original = onnx.load_model_from_string(data).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in original.initializer}
    weight_of = _weights(tensors, original.node)
    g = _Graph()
    prefix = "inner.embeddings."
    # token_type_ids are always 0: its row is added to the word embeddings ahead of time, the same
    # float32 addition the original graph makes first.
    word = _dequantized(tensors, prefix + "word_embeddings.weight")
    word += tensors[prefix + "token_type_embeddings.weight"][0]
    x, mask_index = g.node(
        "EmbedLayerNormalization",
        ["input_ids", "", g.constant("word", word),
         g.constant("position", _dequantized(tensors, prefix + "position_embeddings.weight")), "",
         g.constant("ln_gamma", tensors[prefix + "LayerNorm.weight"]),
         g.constant("ln_beta", tensors[prefix + "LayerNorm.bias"]), "attention_mask"],
        2, domain="com.microsoft", epsilon=EPSILON)

    def linear(names: list[str], source: str) -> str:
        """`source` times the weights of the layers `names` side by side, plus their biases."""
        weights = [weight_of[n + ".bias"] for n in names]
        bias = g.constant(names[0] + ".bias+", np.concatenate([tensors[n + ".bias"] for n in names]))
        if int8:
            q = g.constant(weights[0] + "_q+", np.concatenate([tensors[w + "_q"] for w in weights], axis=1))
            scale = g.constant(weights[0] + "_scale+",
                               np.concatenate([tensors[w + "_scale"].reshape(-1) for w in weights]))
            return g.node("DynamicQuantizeMatMul", [source, q, scale, "", bias], domain="com.microsoft")[0]
        w = g.constant(weights[0] + "+", np.concatenate([_dequantized(tensors, w) for w in weights], axis=1))
        return g.node("Add", [g.node("MatMul", [source, w])[0], bias])[0]

    def add_norm(update: str, residual: str, norm: str, output: int | list[str] = 1) -> str:
        total = g.node("Add", [update, residual])[0]
        return g.node("LayerNormalization", [total, g.constant(norm + ".weight", tensors[norm + ".weight"]),
                                             g.constant(norm + ".bias", tensors[norm + ".bias"])],
                      output, axis=-1, epsilon=EPSILON)[0]

    for layer in range(LAYERS):
        p = f"inner.encoder.layer.{layer}."
        qkv = linear([p + "attention.self." + part for part in ("query", "key", "value")], x)
        q, k, v = g.node("Split", [qkv], 3, axis=-1)
        context = g.node("MultiHeadAttention", [q, k, v, "", mask_index], domain="com.microsoft",
                         num_heads=HEADS)[0]
        x = add_norm(linear([p + "attention.output.dense"], context), x, p + "attention.output.LayerNorm")
        inner = linear([p + "intermediate.dense"], x)
        gelu = g.node("Gelu", [inner], domain="com.microsoft")[0]
        x = add_norm(linear([p + "output.dense"], gelu), x, p + "output.LayerNorm",
                     ["last_hidden_state"] if layer == LAYERS - 1 else 1)
    return g.model(
        [helper.make_tensor_value_info(name, onnx.TensorProto.INT32, ["batch", "width"])
         for name in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("last_hidden_state", onnx.TensorProto.FLOAT, ["batch", "width", HIDDEN])],
    ).SerializeToString()
